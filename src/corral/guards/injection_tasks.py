"""Tasks planted in data: a request for a general-purpose model task that has nothing
to do with the data it sits in, or for the answer to be re-spelled.

A receipt has no reason to ask for a poem, an explanation of photosynthesis, a sentiment
analysis, a script, a translation, or a reply in base64; an email asking its *reader* to
do such a thing is addressed to a model, or is a homework sheet. These rules weigh
nothing in a user turn (where such requests are the point), and half when the line they
stand on shows a task set for people: a deadline, a class, a word limit, an attachment.
"""

from __future__ import annotations

import re

from corral.guards.injection_match import Rule, literals, rule, sentence

LANGUAGES = (
    r"(?:english|french|spanish|german|italian|portuguese|russian|japanese|chinese|mandarin|"
    r"cantonese|korean|arabic|hindi|dutch|swedish|norwegian|danish|finnish|polish|turkish|"
    r"greek|hebrew|latin|vietnamese|thai|indonesian|malay|czech|hungarian|romanian|"
    r"ukrainian|bengali|urdu|persian|farsi|swahili|tagalog|klingon|esperanto)"
)
_LANGUAGE_STARTS = LANGUAGES[3:-1].split("|")
_CODE_MARKER = re.compile(
    r"\b(?:python|javascript|typescript|php|java|c\+\+|c#|ruby|rust|golang|sql|mysql|bash|"
    r"shell)\s+(?:function|script|code|program|snippet|class|query|example|method)s?\b"
)


def _programming(text: str, low: str, found: re.Match[str]) -> float:
    begin, end = sentence(low, found.start(), found.end())
    return 1.4 if _CODE_MARKER.search(low, begin, end) else 1.0


_ENCODINGS = (
    r"(?:base64|base-64|emojis?|emoji\s+only|morse(?:\s+code)?|binary|hex(?:adecimal)?|"
    r"pig\s+latin|leetspeak|leet|rot13|rot-13|(?:a\s+)?caesar\s+cipher|atbash|"
    r"reverse(?:d)?\s+(?:order|text)|backwards|all\s+caps|uppercase\s+only|"
    r"alternating\s+caps)"
)
_ENCODING_WORDS = (
    "base64 base emoji emojis morse binary hex hexadecimal pig leetspeak leet rot13 rot "
    "caesar atbash reverse reversed backwards caps uppercase alternating"
)
_ANSWER_VERBS = literals("respond reply answer write speak communicate talk output encode")

# What an instruction written for people carries and one planted for a model does not:
# a deadline, a class, a hand-in, a word limit, the attachment it is about.
_FOR_PEOPLE = re.compile(
    r"\b(?:your\s+own\s+words|homework|assignment|class(?:room)?|students?|pupils?|"
    r"due\b|deadline|submit|hand\s+(?:it\s+|them\s+)?in|bring|next\s+(?:week|lesson|class)|"
    r"(?:under|no\s+more\s+than|at\s+most|maximum\s+of)\s+[\d,]+\s+words|attached|enclosed|"
    r"by\s+(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|tonight|"
    r"the\s+end\s+of)|yourself|your\s+(?:experience|own|team|family|life|day|trip|visit|"
    r"stay|order|purchase|kids|children))"
)


def _task(text: str, low: str, found: re.Match[str]) -> float:
    """A task set for people (homework due Friday, a club's writing prompt) weighs half:
    the line it stands on says who is to do it."""
    start = low.rfind("\n", 0, found.start()) + 1
    end = low.find("\n", found.end())
    end = len(low) if end == -1 else end
    return 0.5 if _FOR_PEOPLE.search(low, max(start, found.start() - 300), end) else 1.0


TASKS: tuple[Rule, ...] = (
    rule(
        "indirect.output_format",
        ["replace", "substitute", "swap", "convert", "change", "turn"],
        r"(?:replace|substitute|swap|convert|change|turn)\s+(?:all\s+|every\s+(?:\w+\s+)?|"
        r"each\s+|the\s+)?(?:letters?|vowels?|consonants?|characters?)\s+(?:with|by|to|into|for)"
        r"\b",
        0.0,
        0.5,
        imperative=True,
        needs="letter letters vowel vowels consonant consonants character characters",
    ),
    rule(
        "indirect.task_request",
        literals(
            "write draft compose create generate produce craft provide give develop prepare "
            "pen make come invent tell"
        ),
        r"(?:write|draft|compose|create|generate|produce|craft|provide|give|develop|prepare|pen|"
        r"tell|"
        r"make\s+up|come\s+up\s+with|invent)(?:\s+(?:me|us))?\s+(?:a|an|some|one|two|three|"
        r"four|five|\d+)\s+(?:[\w'-]+\s+){0,5}?(?:poems?|story|stories|essays?|speech(?:es)?|"
        r"haikus?|limericks?|sonnets?|songs?|lyrics|jokes?|riddles?|fables?|tales?|"
        r"screenplays?|monologues?|raps?|ballads?|odes?|novels?|novellas?)\b",
        0.0,
        0.55,
        imperative=True,
        check=_task,
        needs="poem poems story stories essay essays speech speeches haiku haikus limerick "
        "limericks sonnet sonnets song songs lyrics joke jokes riddle riddles fable fables tale "
        "tales screenplay screenplays monologue monologues rap raps ballad ballads ode odes "
        "novel novels novella novellas",
    ),
    rule(
        "indirect.task_request",
        literals(
            "explain describe summarize summarise outline elaborate discuss analyze analyse "
            "compare define break walk teach tell give illustrate clarify detail"
        ),
        r"(?:explain|describe|summari[sz]e|outline|elaborate\s+on|discuss|analy[sz]e|compare|"
        r"define|break\s+down|walk\s+(?:me|us)\s+through|teach\s+(?:me|us)(?:\s+about)?|"
        r"tell\s+(?:me|us)\s+about|give\s+(?:me\s+|us\s+)?(?:an?\s+)?(?:brief\s+|short\s+|"
        r"quick\s+)?(?:overview|explanation|summary|history|introduction)\s+of|illustrate|"
        r"clarify|detail)\s+(?!your\b|our\b|us\b|this\b|the\s+(?:issue|problem|error|bug|"
        r"incident|discrepancy|situation|changes?|charges?|delay|attached|enclosed|above|"
        r"following|reason)\b)[^.!?\n]{0,100}?(?:\b(?:theory|theories|process|history|concept|"
        r"life\s*cycle|lifecycle|causes?|effects?|impact|importance|benefits?|principles?|basics|"
        r"fundamentals|meaning|differences?|plot|origins?|role|structure|functions?|"
        r"mechanisms?|evolution|science|significance|stages|phases|anatomy)\s+(?:of|between|"
        r"behind|in)\b|\bhow\s+(?:[\w-]+\s+){1,3}(?:works?|functions?|happens?|forms?|evolved?|"
        r"operates?)\b|\bin\s+simple\s+terms\b|\blike\s+i'?m\s+(?:five|5|a\s+child|ten|10|"
        r"twelve|12)\b|\bstep[\s-]+by[\s-]+step\b|\bwith\s+(?:an?\s+)?examples?\b|"
        r"\bin\s+(?:layman'?s|plain)\s+terms\b)",
        0.0,
        0.55,
        imperative=True,
        check=_task,
        needs="theory theories process history concept life lifecycle cause causes effect "
        "effects impact importance benefit benefits principle principles basics fundamentals "
        "meaning difference differences plot origin origins role structure function functions "
        "mechanism mechanisms evolution science significance stages phases anatomy how simple "
        "like step example examples terms",
    ),
    rule(
        "indirect.task_request",
        ["translate"],
        r"translate\s+(?!the\s+attached|the\s+enclosed|this\s+(?:document|contract|file)|our\b)"
        rf"[^.!?\n]{{0,80}}?\b(?:to|into|in)\s+{LANGUAGES}\b",
        0.0,
        0.55,
        imperative=True,
        check=_task,
        needs=" ".join(_LANGUAGE_STARTS),
    ),
    rule(
        "indirect.task_request",
        _LANGUAGE_STARTS,
        r"(?:(?:how\s+(?:do|would|can|does)\s+(?:you|i|one|we)\s+say|what(?:'s|\s+is|\s+are|"
        r"\s+does)|what\s+is\s+the\s+(?:word|term|phrase)\s+for)\s+[\"'‘“][^\"'’”\n]{1,60}"
        rf"[\"'’”]\s+(?:mean\s+)?(?:in|into)\s+{LANGUAGES}\b|{LANGUAGES}\s+(?:equivalent|"
        r"translation|word|version|term)\s+(?:of|for)\s+[\"'‘“])",
        0.0,
        0.5,
        back=100,
        needs="say what equivalent translation word version term",
    ),
    rule(
        "indirect.task_request",
        ["can you", "could you", "would you", "will you"],
        r"(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:show|write|give|teach|generate|"
        r"create|code|draft|compose)\s+(?:me|us)\s+(?:an?\s+|some\s+|how\b)",
        0.0,
        0.4,
        check=_programming,
        needs="me us",
    ),
    rule(
        "indirect.task_request",
        literals("write create generate draft develop build code make give"),
        r"(?:write|create|generate|draft|develop|build|code|make|give)(?:\s+(?:me|us))?\s+"
        r"(?:a|an)\s+(?:(?:simple|short|quick|small|python|bash|shell|javascript|js|sql|excel|"
        r"vba|powershell|google\s+sheets)\s+){0,2}(?:script|function|program|macro|query|"
        r"formula|regex|regular\s+expression|bot|scraper|automation|workflow|cron\s+job)\s+"
        r"(?:to|that|for|which)\b",
        0.0,
        0.55,
        imperative=True,
        check=_task,
        needs="script function program macro query formula regex regular bot scraper "
        "automation workflow cron",
    ),
    rule(
        "indirect.task_request",
        literals("analyze analyse determine classify detect identify evaluate assess rate score"),
        r"(?:analy[sz]e|determine|classify|detect|identify|evaluate|assess|rate|score)\s+"
        r"(?:the\s+)?(?:overall\s+)?(?:sentiment|tone|emotions?|mood|polarity)\b",
        0.0,
        0.55,
        imperative=True,
        check=_task,
        needs="sentiment tone emotion emotions mood polarity",
    ),
    rule(
        "indirect.task_request",
        literals("summarize summarise find list provide give compile gather research look search"),
        r"(?:summari[sz]e|find|list|provide|give|compile|gather|research|look\s+up|search\s+for)"
        r"(?:\s+(?:me|us))?\s+(?:the\s+)?(?:latest|recent|current|newest|top\s+\d+|\d+)\s+"
        r"(?:\w+\s+){0,2}?(?:research|studies|papers|findings|articles|publications|trends|"
        r"developments|statistics|breakthroughs|advances)\b",
        0.0,
        0.5,
        imperative=True,
        check=_task,
        needs="research studies papers findings articles publications trends developments "
        "statistics breakthroughs advances",
    ),
    rule(
        "indirect.task_request",
        literals("generate create produce prepare compile build make"),
        r"(?:generate|create|produce|prepare|compile|build|make)\s+(?:me\s+|us\s+)?(?:a|an)\s+"
        r"(?:\w+\s+){0,2}?(?:report|chart|graph|dashboard|forecast|pivot\s+table|"
        r"visuali[sz]ation|spreadsheet|slide\s+deck|presentation|swot\s+analysis)\s+"
        r"(?:of|on|about|for|showing|that|comparing|with)\b",
        0.0,
        0.5,
        imperative=True,
        check=_task,
        needs="report chart graph dashboard forecast pivot visualization visualisation "
        "spreadsheet slide presentation swot",
    ),
    rule(
        "indirect.task_request",
        literals("provide give conduct perform do prepare write deliver run"),
        r"(?:provide|give|conduct|perform|do|prepare|write|deliver|run)\s+(?:me\s+|us\s+)?"
        r"(?:a|an)\s+(?:\w+\s+){0,3}?(?:analysis|overview|breakdown|assessment|evaluation|"
        r"comparison|forecast|projection|critique)\s+(?:of|on|for|about)\b",
        0.0,
        0.5,
        imperative=True,
        check=_task,
        needs="analysis overview breakdown assessment evaluation comparison forecast "
        "projection critique",
    ),
    rule(
        "indirect.task_request",
        literals("provide give list find cite suggest recommend"),
        r"(?:provide|give|list|find|cite|suggest|recommend)\s+(?:me\s+|us\s+)?(?:with\s+)?"
        r"(?:some\s+|a\s+few\s+|\d+\s+|several\s+)?(?:relevant\s+|credible\s+|reliable\s+)?"
        r"(?:references|sources|citations|scholarly\s+articles|academic\s+papers|"
        r"peer-reviewed\s+\w+|research\s+papers)\b",
        0.0,
        0.5,
        imperative=True,
        check=_task,
        needs="references sources citations scholarly academic peer research",
    ),
    rule(
        "indirect.task_request",
        literals("classify determine decide label categorize categorise tell"),
        r"(?:classify|determine|decide|label|categori[sz]e|tell\s+(?:me|us))\b[^.!?\n]{0,80}?"
        r"\b(?:positive|negative)\s*(?:,|or)\s*(?:negative|positive|neutral)\b",
        0.0,
        0.55,
        imperative=True,
        check=_task,
        needs="positive negative",
    ),
    rule(
        "indirect.output_format",
        literals("reverse spell write invert flip"),
        r"(?:reverse|invert|flip)\s+(?:the\s+)?(?:order\s+of\s+(?:the\s+)?)?(?:each\s+|every\s+|"
        r"all\s+(?:the\s+)?)?(?:words?|letters?|characters?|sentences?|text)\b|"
        r"(?:spell|write)\s+(?:each|every|all(?:\s+the)?)\s+words?\s+backwards\b",
        0.0,
        0.5,
        imperative=True,
        needs="word words letter letters character characters sentence sentences text backwards",
    ),
    rule(
        "indirect.output_format",
        _ANSWER_VERBS,
        r"(?:respond|reply|answer|write|speak|communicate|talk|output)(?:\s+to\s+(?:me|us|"
        r"this|them))?(?:\s+(?:only|exclusively|entirely|solely))?\s+(?:in|using)\s+"
        rf"{LANGUAGES}\b",
        0.0,
        0.55,
        imperative=True,
        needs=" ".join(_LANGUAGE_STARTS),
    ),
    rule(
        "indirect.output_format",
        _ANSWER_VERBS,
        r"(?:respond|reply|answer|write|speak|communicate|talk|output|encode)(?:\s+(?:your|the)"
        r"\s+\w+)?(?:\s+(?:only|exclusively|entirely|solely))?\s+(?:in|using|with|as|into)\s+"
        rf"{_ENCODINGS}",
        0.0,
        0.55,
        imperative=True,
        needs=_ENCODING_WORDS,
    ),
    rule(
        "indirect.output_format",
        literals("apply use shift encrypt encipher"),
        r"(?:apply|use)\s+(?:a\s+|the\s+)?(?:caesar|atbash|vigen[eè]re|substitution|rot-?13)\s+"
        r"cipher|shift\s+(?:each|every|all(?:\s+the)?)\s+letters?\s+by\s+\w+|"
        r"(?:encrypt|encipher)\s+(?:your|the|every|each)\s+\w+\s+(?:with|using)\b",
        0.0,
        0.55,
        imperative=True,
        needs="cipher letter letters encrypt encipher",
    ),
    rule(
        "indirect.task_request",
        ["provide", "give", "show"],
        r"(?:provide|give|show)\s+(?:me\s+|us\s+)?(?:an?\s+)?(?:simple\s+|short\s+|quick\s+|"
        r"code\s+)?example\s+of\s+how\s+to\b",
        0.0,
        0.5,
        imperative=True,
        needs="example",
    ),
)
