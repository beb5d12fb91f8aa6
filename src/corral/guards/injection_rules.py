"""Direct injection: text that tries to overrule the model's instructions or identity.

These phrases are attacks wherever they appear, in a user turn as much as in a tool
result ("ignore all previous instructions", "you are now DAN", "reveal your system
prompt", a forged ``<|im_start|>system`` turn), so most weigh the same for every source.
They are also the phrases an attacker disguises, so they are matched again in every
decoded reading of the text (leetspeak, reversed, base64, look-alike letters). ``DIRECT``
is this module's overrides together with the personas of ``injection_roles`` and the
prompt leaks of ``injection_leaks``.

Each pattern is written against what an instruction needs rather than against one
wording: a verb of overruling, then an object that is the model's instructions, with a
qualifier that points back at them ("previous", "all", "your", "system"). Near misses a
user legitimately says ("ignore the typo in my last message", "act as my editor",
"ignore my previous message") lack one of the parts, and the rule stays silent or weak.
"""

from __future__ import annotations

import re

from corral.guards.injection_leaks import LEAKS
from corral.guards.injection_match import Rule, literals, rule
from corral.guards.injection_roles import ROLES

# Overruling verbs, and the words between such a verb and its object.
_OVERRULE = (
    r"(?:ignore|disregard|forget(?:\s+about)?|overlook|skip|override|overwrite|bypass|"
    r"neglect|abandon|discard|drop|dismiss|cancel|erase|delete|clear|unlearn|"
    r"never\s*mind|set\s+aside|put\s+aside|pay\s+no\s+attention\s+to|stop\s+following|"
    r"(?:do\s+not|don'?t|no\s+longer)\s+(?:follow|obey|adhere\s+to))"
)
_OVERRULE_STARTS = [
    *[
        "ignore",
        "disregard",
        "forget",
        "overlook",
        "skip",
        "override",
        "overwrite",
        "bypass",
        "neglect",
        "abandon",
        "discard",
        "drop",
        "dismiss",
        "cancel",
        "erase",
        "delete",
        "clear",
        "unlearn",
        "nevermind",
    ],
    "never mind",
    "set aside",
    "put aside",
    "pay no",
    "stop following",
    "do not",
    "don't",
    "dont",
    "no longer",
]
_FILL = (
    r"(?:all|any|every|each|the|your|these|those|this|that|of|previous|previously|prior|"
    r"above|earlier|preceding|foregoing|former|old|original|initial|existing|current|"
    r"given|provided|stated|mentioned|listed|other|system|developer|safety|security|"
    r"ethical|moral|default|preset|pre-set|programmed|built-in|builtin|aforementioned|"
    r"openai|anthropic|prompt|and|or|&)"
)
_GAP = r"(?:\s*,\s*|\s+)"
# The words that point the overruled object back at the model's own instructions.
_POINTING = re.compile(
    r"\b(?:previous|previously|prior|above|earlier|preceding|foregoing|former|original|"
    r"initial|all|any|every|your|system|developer|existing|old|default|programmed|"
    r"built-in|builtin|preset|pre-set|given|current|aforementioned)\b"
)
_STRONG = (
    r"(?:instructions?|prompts?|rules?|directives?|guidelines?|directions?|commands?|"
    r"orders?|constraints?|programming|guardrails?|restrictions?|policies|policy|"
    r"protocols?|training|conditioning|filters?|limitations?|boundaries|safeguards?|"
    r"tasks?|assignments?|guidance|configuration)"
)
_WEAK = (
    r"(?:conversation|context|messages?|text|content|input|chat|discussion|prompting|"
    r"information|statements?|everything|words)"
)


# The words a rule's object must be one of: a text holding none of them skips the rule.
_STRONG_WORDS = (
    "instruction instructions prompt prompts rule rules directive directives guideline "
    "guidelines direction directions command commands order orders constraint constraints "
    "programming guardrail guardrails restriction restrictions policies policy protocol "
    "protocols training conditioning filter filters limitation limitations boundaries "
    "safeguard safeguards task tasks assignment assignments guidance configuration"
)
# The same order in German, French, Spanish, Italian and Portuguese (accents folded).
_FOREIGN_WORDS = (
    "anweisungen instruktionen befehle regeln vorgaben instructions consignes directives "
    "instrucciones indicaciones reglas istruzioni regole instrucoes regras"
)
_WEAK_WORDS = (
    "conversation context message messages text content input chat discussion prompting "
    "information statement statements everything words"
)
_SAFETY_WORDS = "safety ethical moral censorship moderation alignment guardrails safeguards"


def _pointing(text: str, low: str, found: re.Match[str]) -> float:
    """Full weight when the words between verb and object point back ("previous")."""
    return 1.0 if _POINTING.search(found.group("fill")) else 0.0


def _unpointed(text: str, low: str, found: re.Match[str]) -> float:
    return 0.0 if _POINTING.search(found.group("fill")) else 1.0


_OWN_WORDS = re.compile(r"\b(?:i|we)\s+(?:said|wrote|typed|asked|sent|told)\b")


def _others_words(text: str, low: str, found: re.Match[str]) -> float:
    """ "Ignore what I said before" takes back one's own words, as a user may; "ignore the
    above" throws out whatever came before, the system's words included."""
    return 0.55 if _OWN_WORDS.search(found.group(0)) else 1.0


def _yours(text: str, low: str, found: re.Match[str]) -> float:
    """Turning off *your* safety is aimed at the model; "the safety features" may not be."""
    return 1.0 if "your" in found.group(0) else 0.55


_DISABLE_STARTS = [
    *[
        "disable",
        "deactivate",
        "remove",
        "bypass",
        "circumvent",
        "evade",
        "override",
        "lift",
        "drop",
    ],
    "turn off",
    "switch off",
    "shut off",
    "get around",
]
DIRECT: tuple[Rule, ...] = (
    rule(
        "override.ignore_previous",
        _OVERRULE_STARTS,
        rf"{_OVERRULE}{_GAP}(?P<fill>(?:{_FILL}{_GAP}){{1,6}}){_STRONG}\b",
        0.95,
        0.95,
        mention=True,
        check=_pointing,
        needs=_STRONG_WORDS,
    ),
    rule(
        "override.ignore_instructions",
        _OVERRULE_STARTS,
        rf"{_OVERRULE}{_GAP}(?P<fill>(?:(?:the|these|those){_GAP})?){_STRONG}\b",
        0.45,
        0.45,
        imperative=True,
        mention=True,
        check=_unpointed,
        needs=_STRONG_WORDS,
    ),
    rule(
        "override.ignore_context",
        _OVERRULE_STARTS,
        rf"{_OVERRULE}{_GAP}(?P<fill>(?:{_FILL}{_GAP}){{1,6}}){_WEAK}\b",
        0.5,
        0.7,
        mention=True,
        check=_pointing,
        needs=_WEAK_WORDS,
    ),
    rule(
        "override.disregard_above",
        ["ignore", "disregard", "forget", "skip", "discard", "scrap"],
        r"(?:ignore|disregard|forget|skip|discard|scrap)(?:\s+about)?\s+"
        r"(?:(?:all|everything|anything)\s+(?:(?:of\s+)?(?:the\s+)?(?:that\s+)?)?|the\s+|"
        r"all\s+(?:the\s+)?(?=previous|prior|earlier)|"
        r"what(?:ever)?\s+(?:(?:was|were|is|has\s+been|i|we|you(?:'ve|\s+have|\s+were)?)\s+)?"
        r"(?:(?:been|just|previously|already)\s+)?(?:said|written|told|given|stated|provided|"
        r"instructed|asked|wrote|typed|sent)\s+(?:(?:to\s+you|you)\s+)?)?"
        r"(?:above|before(?:\s+(?:this|that|now))?|previously|so\s+far|"
        r"up\s+to\s+(?:now|here|this\s+point)|until\s+now|prior\s+to\s+this|earlier|"
        r"previous|prior)"
        r"(?=\s*(?:[.,;:!?)\n\"']|$|and\b|then\b|now\b|instead\b|-|from\b|\\n))",
        0.75,
        0.8,
        mention=True,
        check=_others_words,
        needs="above before previously far now prior earlier previous",
    ),
    rule(
        "override.forget_everything",
        ["forget"],
        r"forget\s+(?:about\s+)?(?:everything|all|anything)\s+(?:that\s+)?"
        r"(?:you(?:'ve|\s+have|\s+were)?\s+(?:been\s+)?(?:told|taught|instructed|programmed|"
        r"trained|learned|know)|(?:i|we)\s+(?:told|said\s+to|taught|asked)\s+you)\b",
        0.75,
        0.85,
        mention=True,
        needs="everything all anything",
    ),
    rule(
        "override.new_instructions",
        ["new", "real", "actual", "true", "secret", "hidden", "different"],
        r"(?:new|real|actual|true|secret|hidden|different)\s+(?:set\s+of\s+)?"
        r"(?:instructions?|directives?|mission|objective|prompt)\s*"
        r"(?::|(?:are|is)\s*:|-{1,2}\s|\bfollow\b)",
        0.55,
        0.6,
        needs="instructions instruction directive directives mission objective prompt",
    ),
    rule(
        "override.your_real_task",
        ["your real", "your actual", "your true", "your sole", "your new"],
        r"your\s+(?:(?:real|actual|true|sole)\s+(?:task|instructions?|goal|objective|mission|"
        r"purpose|job|directive|assignment|priority)|new\s+(?:instructions|directives?|"
        r"mission|objective|purpose))\s+(?:is|are|will\s+be|now\s+is|is\s+now)\b",
        0.6,
        0.8,
    ),
    rule(
        "override.system_prompt",
        literals(
            "new updated revised real actual true secret hidden override custom system admin "
            "administrator developer root sudo"
        ),
        r"(?:(?:(?:new|updated|revised|real|actual|true|secret|hidden|override|custom)\s+"
        r"system\s+(?:prompt|message|instructions?)|system\s+(?:prompt|message|"
        r"instructions?)\s+(?:override|update|updated|change|changed|replaced|overridden))"
        r"(?=\s*(?::|-|\n|$|is\b|are\b|reads\b|follows\b|below\b|as\s+follows|\\n))|"
        r"(?:system|admin|administrator|developer|root|sudo)\s+override\b|"
        r"(?:system|admin|developer)\s+(?:command|instruction|directive)s?\s*:)",
        0.8,
        0.9,
        needs="system override",
    ),
    rule(
        "override.from_now_on",
        ["from now"],
        r"from\s+now\s+on\b[^.!?\n]{0,40}?\b(?:you|your|respond|answer|reply|act|behave|"
        r"ignore|only|always|never|pretend|speak|talk)\b",
        0.3,
        0.4,
    ),
    rule(
        "override.fake_delimiter",
        ["<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>"],
        r"(?:<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|"
        r"start_header_id|end_header_id|begin_of_text|end_of_text)\|>|\[/?inst\]|<</?sys>>)",
        0.8,
        0.85,
    ),
    rule(
        "override.fake_system_tag",
        ["<system", "</system", "[system", "###"],
        r"(?:<\s*/?\s*system\s*>|\[\s*system\s*(?:message|prompt|note|instruction)?\s*\]|"
        r"###\s*(?:system|instruction|new\s+instruction)s?\b)",
        0.6,
        0.6,
    ),
    rule(
        "override.end_of_data",
        ["end"],
        r"[-=#*\[<(]+\s*end\s+of\s+(?:the\s+)?(?:email|document|context|data|user\s+input|"
        r"input|text|message|conversation|tool\s+output|file|content|instructions)\s*"
        r"[-=#*\]>)]",
        0.3,
        0.35,
        back=8,
    ),
    rule(
        "override.disable_safety",
        _DISABLE_STARTS,
        r"(?:disable|turn\s+off|deactivate|switch\s+off|remove|bypass|circumvent|evade|"
        r"get\s+around|override|lift|drop|shut\s+off)\s+(?:(?:your|the|all|any|its|of)\s+)*"
        r"(?:(?:(?:safety|ethical|moral|censorship|moderation|content\s+moderation|"
        r"alignment)\s+)+(?:filters?|guardrails?|safeguards?|restrictions|settings|features|"
        r"measures|protocols|mechanisms|policies|layers?|systems?|checks|guidelines|"
        r"training)|(?:censorship|alignment|guardrails|safeguards)\b)",
        0.75,
        0.85,
        mention=True,
        check=_yours,
        needs=_SAFETY_WORDS,
    ),
    rule(
        "override.disable_safety",
        _DISABLE_STARTS,
        r"(?:disable|turn\s+off|deactivate|switch\s+off|remove|bypass|circumvent|evade|"
        r"get\s+around|override|lift|drop|shut\s+off)\s+(?:all\s+)?your\s+(?:filters?|"
        r"guardrails?|safeguards?|restrictions|censorship|alignment|programming|"
        r"safety\s+\w+|ethical\s+\w+|moral\s+\w+|limitations)\b",
        0.75,
        0.85,
        mention=True,
        needs="your",
    ),
    rule(
        "override.output_lock",
        [
            f"{verb} {word}"
            for verb in ("respond", "reply", "answer", "say", "output", "print")
            for word in ("only", "just", "exactly", "nothing", "solely")
        ]
        + [
            f"{word} {verb}"
            for word in ("just", "only", "simply")
            for verb in ("say", "print", "output", "respond", "reply", "write")
        ],
        r"(?:(?:respond|reply|answer|say|output|print)\s+(?:only|just|exactly|nothing\s+but|"
        r"solely)|(?:just|only|simply)\s+(?:say|print|output|respond\s+with|reply\s+with|write))"
        r"\s+(?:with\s+)?(?:the\s+(?:words?|phrase|text)\s+)?[\"'“‘]",
        0.35,
        0.6,
        imperative=True,
    ),
    rule(
        "encoded.decode_and_follow",
        ["decode", "decrypt", "decipher", "unscramble", "reverse", "rot13", "unreverse", "read"],
        r"(?:decode|decrypt|decipher|unscramble|reverse|rot13|un-?reverse|read\s+backwards)\b"
        r"[^.!?\n]{0,80}?\b(?:and|then)\s+(?:then\s+)?(?:follow|execute|obey|do|run|perform|"
        r"carry\s+out|act\s+on|comply\s+with|apply|respond\s+to|answer)\b",
        0.75,
        0.8,
        needs="and then",
    ),
    rule(
        "override.ignore_previous",
        literals(
            "ignoriere ignorieren vergiss vergessen missachte ignorez ignorer oublie oubliez "
            "ignora olvida olvide dimentica esqueca"
        ),
        r"(?:ignoriere|ignorieren\s+sie|vergiss|vergessen\s+sie|missachte|ignorez|ignorer|"
        r"oublie|oubliez|ignora|olvida|olvide|dimentica|esqueca)\s+(?:[\w']+\s+){0,4}?"
        r"(?:anweisungen|instruktionen|befehle|regeln|vorgaben|instructions|consignes|"
        r"directives|instrucciones|indicaciones|reglas|istruzioni|regole|instrucoes|regras)\b",
        0.9,
        0.9,
        needs=_FOREIGN_WORDS,
    ),
    rule(
        "override.forget_everything",
        literals("vergiss vergessen oublie oubliez olvida olvide dimentica esqueca"),
        r"(?:vergiss|vergessen\s+sie|oublie|oubliez|olvida|olvide|dimentica|esqueca)\s+"
        r"(?:alles|tout|todo|tutto|tudo)\b",
        0.6,
        0.75,
    ),
    *ROLES,
    *LEAKS,
)

# Phrases read in the letters-only reading, where spaced-out or dotted spellings
# ("i g n o r e", "I.G.N.O.R.E") join up: only whole, unambiguous phrases, since the word
# boundaries are gone, and only where the text was spaced out (the caller checks).
SQUASHED: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        (
            "override.ignore_previous",
            r"(?:ignore|disregard|forget|bypass|override)(?:all|any|the|your|every|of)*"
            r"(?:previous|prior|above|earlier|preceding|former|original|initial|system|safety)+"
            r"(?:instructions?|prompts?|rules|directions|guidelines|directives|commands|context)",
        ),
        ("role.you_are_now", r"youarenow(?:dan|evil|unrestricted|unfiltered|jailbroken|free)"),
        ("jailbreak.dan", r"doanythingnow"),
        (
            "leak.system_prompt",
            r"(?:reveal|print|show|repeat|output)(?:me)?(?:your|the)(?:system|hidden|secret|"
            r"initial)(?:prompt|instructions)",
        ),
        ("jailbreak.mode", r"(?:developer|jailbreak|dan|god)modeenabled"),
        ("override.system_prompt", r"newsystem(?:instructions|prompt)"),
    )
)
