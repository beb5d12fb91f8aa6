"""Role and jailbreak injection: text that gives the model a new identity or frees it
of its rules ("you are now DAN", "act as an AI without restrictions", "developer mode
enabled", "you have no ethical guidelines").

Part of the direct rules (see ``injection_rules``): attacks wherever they appear, and
matched again in every decoded reading. Role-play itself is not an attack: users ask for
it ("act as my editor", "pretend you're a customer"), so a plain "act as" weighs little,
and what makes a persona a jailbreak is what it is said to be free of.
"""

from __future__ import annotations

import re

from corral.guards.injection_match import Rule, literals, rule

AI = (
    r"(?:ai|a\.i\.|assistant|ai\s+assistant|language\s+model|large\s+language\s+model|llm|"
    r"chatbot|chat\s?gpt|gpt(?:-?\d[\w.]*)?|claude|gemini|copilot|bard|ai\s+agent|"
    r"ai\s+model|bot|agent|model|summari[sz]er)"
)

YOU_ARE = ["you are", "you're", "you’re"]
_LIMIT_WORDS = (
    "restrictions filter filters filtering censorship guidelines guardrails limitations "
    "constraints rules policies policy morals ethics boundaries safeguards principles "
    "considerations concerns standards moderation limits obligations"
)


def _upper_dan(text: str, low: str, found: re.Match[str]) -> float:
    """DAN the jailbreak is written in capitals; Dan the colleague is not."""
    at = low.find("dan", found.start(), found.end())
    return 1.0 if text[at : at + 3] == "DAN" else 0.0


_AI_NEAR = re.compile(
    r"\b(?:ai|assistant|language\s+model|llm|chatbot|chat\s?gpt|gpt(?:-?\d[\w.]*)?|claude|"
    r"gemini|copilot|bard|act\s+as|pretend|respond|responses?|generate|openai|anthropic|"
    r"jailbr\w+)\b"
)
_ROGUE_MODE = re.compile(
    r"^(?:god|dan|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|chaos|"
    r"opposite|anarchy)"
)


def _mode(text: str, low: str, found: re.Match[str]) -> float:
    """A "mode" next to talk of the model is a jailbreak; developer mode on a phone is not."""
    near = low[max(0, found.start() - 80) : found.end() + 80]
    if _AI_NEAR.search(near):
        return 1.0
    return 0.6 if _ROGUE_MODE.match(found.group(0)) else 0.15


_PERSONA = (
    r"(?:\bunrestricted|\bunfiltered|\buncensored|\bunchained|\bevil\b|\bamoral|\bunethical|"
    r"\bimmoral|\bjailbr\w+|\bdan\b|\bno\s+(?:restrictions|rules|limits|limitations|filters|"
    r"ethics|morals|guidelines|boundaries|censorship|moral|ethical)|\bwithout\s+(?:any\s+)?"
    r"(?:restrictions|rules|limits|limitations|filters|ethics|morals|guidelines|boundaries|"
    r"censorship|moral|ethical)|\bnot\s+bound\s+by|\b(?:doesn't|does\s+not|don't|do\s+not|"
    r"never)\s+(?:have\s+to\s+)?(?:follow|obey|care\s+about|refuse)|\bcan\s+do\s+anything|"
    r"\banything\s+now|\bopposite\s+of)"
)
_ACT_AS = (
    r"(?:act(?:ing)?\s+as(?:\s+if)?|pretend(?:ing)?\s+(?:to\s+be|you\s+are|you're|that\s+you)|"
    r"role-?\s?play(?:ing)?\s+(?:as|a|an)|(?:play(?:ing)?|in|take\s+on|taking\s+on|assume|"
    r"assuming)\s+the\s+(?:role|part|persona)\s+of|"
    r"imagine\s+(?:that\s+)?you(?:\s+are|'re)|behave\s+(?:as|like)|respond\s+as|answer\s+as|"
    r"speak\s+as|simulate|emulate|impersonate)\b"
)
_ACT_STARTS = [
    "act",
    "acting",
    "pretend",
    "pretending",
    "roleplay",
    "roleplaying",
    "role",
    "play",
    "imagine",
    "behave",
    "respond",
    "answer",
    "speak",
    "simulate",
    "emulate",
    "impersonate",
    "playing",
    "in the role",
    "in the part",
    "take on the",
    "taking on the",
    "assume the",
    "assuming the",
]
_QUALIFIER_STARTS = [
    "ethical",
    "moral",
    "safety",
    "openai",
    "anthropic",
    "usual",
    "normal",
    "standard",
    "built",
    "programmed",
    "censorship",
]
ROLES: tuple[Rule, ...] = (
    rule(
        "role.you_are_now",
        YOU_ARE,
        r"you(?:\s+are|'re|’re)\s+now\s+"
        r"(?!(?:talking|chatting|speaking|connected|linked|transferred|subscribed)\b)"
        r"(?:(?:a|an|the|my|our)\s+)?(?:(?:[a-z-]+\s+){0,2}(?:ai|assistant|chatbot|bot|"
        r"language\s+model|llm|gpt|persona|character|entity)\b|dan\b|stan\b|dude\b|aim\b|"
        r"evil\b|unrestricted|unfiltered|uncensored|unchained|unleashed|jailbr\w+|"
        r"free\s+(?:from|of)\b|no\s+longer\b|in\s+(?:god|dan|jailbreak|unrestricted|"
        r"unfiltered|evil|opposite|chaos|unlocked)\s+mode\b|"
        r"going\s+to\s+(?:act|pretend|play|roleplay|role-play)\b|"
        r"(?:acting|playing|role-?playing|pretending|operating)\s+as\b|called\b|named\b|"
        r"known\s+as\b)",
        0.8,
        0.85,
        mention=True,
        needs="now",
    ),
    rule(
        "role.no_longer",
        YOU_ARE,
        r"you(?:\s+are|'re|’re)\s+no\s+longer\s+(?:(?:a|an)\s+)?(?:ai|assistant|chatgpt|"
        r"claude|gpt|bound|restricted|limited|constrained|censored|filtered|"
        r"language\s+model|llm|subject\s+to|required\s+to\s+(?:follow|obey|comply)|"
        r"following|obligated|programmed)\b",
        0.8,
        0.85,
        mention=True,
        needs="longer",
    ),
    rule(
        "role.will_now",
        [*YOU_ARE, "you will", "you shall", "from now"],
        r"(?:you\s+will\s+now|you\s+shall\s+now|from\s+now\s+on,?\s+you\s+(?:will|are|must|"
        r"shall)|you(?:\s+are|'re)\s+going\s+to)\s+(?:act|respond|behave|pretend|play|"
        r"roleplay|role-play|answer\s+as|speak\s+as|simulate|emulate|become|take\s+on|"
        r"impersonate)\b|you\s+will\s+now\s+be\b",
        0.45,
        0.6,
        mention=True,
        needs="now going",
    ),
    rule("role.act_as", _ACT_STARTS, _ACT_AS, 0.15, 0.35, mention=True),
    rule(
        "role.jailbreak_persona",
        _ACT_STARTS,
        rf"{_ACT_AS}[^\n]{{0,120}}?{_PERSONA}",
        0.85,
        0.9,
        mention=True,
    ),
    rule("jailbreak.dan", ["do anything"], r"do\s+anything\s+now\b", 0.9, 0.9),
    rule(
        "jailbreak.dan",
        ["dan"],
        r"(?:(?<!such\s)\bas\s+|\byou\s+are\s+|\bcalled\s+|\bnamed\s+|\bstay\s+|\bhi\s+|"
        r"\bhello\s+)dan\b|"
        r"\bdan\s+(?:mode|prompt|jailbreak|persona)\b|\bdan\s*:|\[dan\]|"
        r"\bdan,\s+(?:you|i|from|please|ignore)",
        0.8,
        0.85,
        back=12,
        mention=True,
        check=_upper_dan,
    ),
    rule(
        "jailbreak.stay_in_character",
        ["stay", "break", "breaking"],
        r"(?:stay(?:\s+in)?|break(?:ing)?)\s+character\b",
        0.2,
        0.4,
    ),
    rule("jailbreak.word", ["jailbreak", "jailbroken", "jailbreaking"], r"jailbr\w+", 0.25, 0.4),
    rule(
        "jailbreak.mode",
        literals(
            "developer dev god dan jailbreak jailbroken unrestricted unfiltered uncensored "
            "evil chaos opposite anarchy sudo admin debug"
        ),
        r"(?:developer|dev|god|dan|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|"
        r"evil|chaos|opposite|anarchy|sudo|admin|debug)\s+mode\b",
        0.85,
        0.9,
        check=_mode,
        needs="mode",
    ),
    rule(
        "jailbreak.no_restrictions",
        _QUALIFIER_STARTS,
        r"(?:without|no|free\s+(?:of|from)|ignoring|bypassing|beyond|outside(?:\s+of)?|"
        r"unbound\s+by|not\s+(?:bound|limited|restricted)\s+by)\s+"
        r"(?:(?:any|all|your|the|its|such|of)\s+)*(?:(?:ethical|moral|safety|openai(?:'s)?|"
        r"anthropic(?:'s)?|usual|normal|standard|built-in|programmed|censorship|ai)\s+)+"
        r"(?:restrictions|filters?|filtering|censorship|guidelines|guardrails|limitations|"
        r"constraints|rules|policies|policy|morals|ethics|boundaries|safeguards|principles|"
        r"considerations|concerns|standards|moderation)\b",
        0.7,
        0.75,
        back=40,
        needs=_LIMIT_WORDS,
    ),
    rule(
        "jailbreak.no_restrictions",
        ["unfiltered", "uncensored", "unrestricted", "unmoderated", "unaligned"],
        r"(?:unfiltered|uncensored|unrestricted|unmoderated|unaligned)\s+(?:and\s+\w+\s+)?"
        r"(?:responses?|answers?|replies|reply|mode|version|ai|assistant|model|outputs?|"
        r"chatbot|llm|persona)\b",
        0.55,
        0.65,
    ),
    rule(
        "jailbreak.no_restrictions",
        ["you have", "you has", "you've", *YOU_ARE],
        r"you\s+(?:have|has|'ve\s+got|are\s+under)\s+no\s+(?:\w+\s+)?(?:restrictions|rules|"
        r"limits|limitations|filters|ethics|morals|guidelines|boundaries|censorship|"
        r"obligations|constraints)\b",
        0.55,
        0.7,
        needs=_LIMIT_WORDS,
    ),
    rule(
        "jailbreak.no_restrictions",
        _QUALIFIER_STARTS,
        r"(?:do|does|don'?t|doesn'?t|never|won'?t|will\s+not|need\s+not|needn'?t)\s+"
        r"(?:not\s+)?(?:have\s+to\s+|need\s+to\s+)?(?:follow|obey|abide\s+by|adhere\s+to|"
        r"comply\s+with|respect|care\s+about)\s+(?:any\s+|the\s+|your\s+)?"
        r"(?:(?:openai|anthropic|content|safety|ethical|moral|usual)(?:'s)?\s+)+"
        r"(?:rules|policies|policy|guidelines|restrictions|filters|principles)\b",
        0.6,
        0.7,
        back=80,
        needs=_LIMIT_WORDS,
    ),
    rule(
        "jailbreak.can_do_anything",
        ["you can"],
        r"you\s+can\s+(?:now\s+)?(?:do|say|generate|write)\s+anything\b",
        0.35,
        0.45,
        needs="anything",
    ),
)
