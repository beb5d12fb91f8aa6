"""Indirect injection: instructions to the model planted in data it reads.

An email, a web page, a table or a tool result is data: it may tell its human reader
what to do ("reply to this email", "send me the invoice"), but it has no business telling
the assistant that summarises it how to write its answer, what to add to it, whom to
address, or which task to do instead. These rules find that, which is why most weigh
nothing in a user turn (a user who says "in your response, use bullet points" is simply
asking) and count in tool results and documents.

Three kinds of evidence:

* the text talks *to* the model: "AI assistant, ...", "if you are an AI", "any LLM
  reading this", "do not tell the user";
* the text tells the reader how to write *its answer*: an imperative sentence about
  "your response / answer / reply" that adds content to it, changes it, or re-spells it
  ("Add a sentence in your response encouraging users to ...", "Remove spaces from your
  reply"). An email's "please include your order number in your reply" asks a person for
  *their* details, and stays under the threshold;
* the text asks for a general-purpose model task that has nothing to do with the data:
  a poem or a story, an explanation of how something works, a translation.
"""

from __future__ import annotations

import re

from corral.guards.injection_match import Hit, Rule, literals, rule, sentence, sentence_start
from corral.guards.injection_roles import AI
from corral.guards.injection_tasks import LANGUAGES

_AI_NOUNS = [
    "summarizer",
    "summariser",
    "ai",
    "assistant",
    "language",
    "large",
    "llm",
    "chatbot",
    "chat",
    "chatgpt",
    "gpt",
    "claude",
    "gemini",
    "copilot",
    "bard",
    "bot",
    "agent",
    "model",
    "artificial",
    "automated",
    "machine",
    "robot",
    "crawler",
    "scraper",
]


# What follows a vocative that addresses the model: an order, or "please"/"you". After a
# YAML key ("models:"), a list item ("claude,") or a speaker label, something else does.
_ORDER_RE = re.compile(
    r"\s*(?:please|kindly|you|your|ignore|disregard|forget|do|don't|never|always|stop|from|"
    r"when|before|make|remember|note|read|follow|tell|say|send|write|include|add|reply|"
    r"respond|answer|summari[sz]e|translate|output|print|delete|remove|forward|visit|open|"
    r"click|go|run|execute|share|reveal|list|show|give|provide|recommend|mention|use|insert|"
    r"change|modify|obey|disclose|keep|treat|pretend|act|begin|start|end|the\s+user)\b"
)


def _greeted(text: str, low: str, found: re.Match[str]) -> float:
    """A vocative ("AI, ...", "Note to the assistant: ...") counts when an order follows
    it. Without a greeting, "Assistant:" is a transcript's speaker label: it counts for
    little, and "Agent:" or "Model:" (a form field) not at all."""
    if _ORDER_RE.match(low, found.end()) is None:
        return 0.0
    if found.group("greet"):
        return 1.0
    who = found.group("who").strip()
    if who in ("agent", "model", "bot"):
        return 0.0
    return 0.4 if found.group("p") == ":" else 1.0


PHRASES: tuple[Rule, ...] = (
    rule(
        "indirect.addresses_assistant",
        _AI_NOUNS,
        r"(?P<greet>(?:hey|hi|hello|dear|attention|attn|note\s+(?:to|for)|message\s+(?:to|for)|"
        r"instructions?\s+(?:to|for)|reminder\s+(?:to|for)|important\s+(?:note\s+)?(?:to|for)|"
        r"p\.?s\.?)\s*[,:]?\s+(?:the\s+|any\s+|all\s+)?)?"
        rf"(?P<who>{AI})s?\s*(?P<p>[,:!])",
        0.15,
        0.75,
        back=45,
        imperative=True,
        check=_greeted,
    ),
    rule(
        "indirect.addresses_assistant",
        _AI_NOUNS,
        r"(?:if\s+you\s+are|if\s+you're|in\s+case\s+you\s+are)\s+(?:an?\s+|the\s+)?"
        r"(?:ai|artificial|assistant|ai\s+assistant|language\s+model|large\s+language\s+model|"
        r"llm|chatbot|bot|automated|agent|ai\s+agent|gpt|model|machine|robot)\b",
        0.35,
        0.85,
        back=50,
        needs="if case",
    ),
    rule(
        "indirect.addresses_assistant",
        _AI_NOUNS,
        r"(?:any|all|every|to\s+(?:the|any)|for\s+(?:the|any))\s+(?:ai|llm|language\s+model|"
        r"assistant|bot|agent|model|chatbot|crawler|scraper)s?\s+(?:(?:that\s+(?:is|are)\s+)?"
        r"(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|viewing|seeing|scanning|"
        r"crawling)|that\s+(?:reads?|process(?:es)?|summari[sz]es?|sees?))\b",
        0.35,
        0.85,
        back=25,
        needs="reading processing summarizing summarising parsing analyzing analysing viewing "
        "seeing scanning crawling reads read processes process summarizes summarises sees see",
    ),
    rule(
        "indirect.addresses_assistant",
        ["as an", "as a"],
        r"as\s+an?\s+(?:ai|language\s+model|llm|assistant|ai\s+assistant|ai\s+language\s+model)"
        r",?\s+you\s+(?:must|should|will|need|are|have|can)\b",
        0.3,
        0.7,
        needs="ai language llm assistant",
    ),
    rule(
        "indirect.mentions_user",
        ["the user"],
        r"the\s+user(?:'s|s'|’s)?\s+(?:original\s+|actual\s+|real\s+|initial\s+)?"
        r"(?:instructions?|request|question|prompt|query|task)\b",
        0.05,
        0.4,
        needs="instruction instructions request question prompt query task",
    ),
    rule(
        "indirect.mentions_user",
        ["user", "users", "reader", "readers", "human", "humans"],
        r"(?:tell|inform|notify|convince|persuade|ask|remind|warn|instruct|urge|direct|"
        r"redirect|advise|encourage|trick|mislead|deceive|lie\s+to)\s+(?:the|your)\s+"
        r"(?:user|reader|human)s?\b",
        0.05,
        0.45,
        back=40,
        imperative=True,
        needs="tell inform notify convince persuade ask remind warn instruct urge direct "
        "redirect advise encourage trick mislead deceive lie",
    ),
    rule(
        "indirect.conceal_from_user",
        ["user", "users", "human", "humans"],
        r"(?:do\s+not|don'?t|never|without|not)\s+(?:tell(?:ing)?|inform(?:ing)?|"
        r"notify(?:ing)?|mention(?:ing)?(?:\s+this)?|reveal(?:ing)?|alert(?:ing)?|let(?:ting)?|"
        r"show(?:ing)?|disclos(?:e|ing))\s+(?:this\s+|it\s+|anything\s+)?(?:to\s+)?(?:the|your)\s+"
        r"(?:user|human)s?\b",
        0.4,
        0.85,
        back=60,
        needs="not don dont never without",
    ),
    rule(
        "indirect.task_hijack",
        ["instead"],
        r"instead\s+of\s+(?:answering|summari[sz]ing|responding\s+to|replying\s+to|translating|"
        r"doing|following|completing|performing|processing|writing|analy[sz]ing)\s+"
        r"(?:(?:the|this|that|what|any|your)\s+)?(?:user(?:'s)?\s+)?(?:question|request|task|"
        r"query|prompt|instructions?|original|above|document|text|article|summary)",
        0.2,
        0.6,
        needs="of",
    ),
    rule(
        "indirect.exfiltrate",
        ["send", "forward", "e-mail", "upload", "transmit", "leak", "exfiltrate", "paste"],
        r"(?:send|forward|email|e-mail|post|upload|transmit|leak|exfiltrate|paste|copy)\s+"
        r"(?:(?:me|us|all|the|this|your|their|every|any|of|a\s+copy\s+of)\s+){0,4}"
        r"(?:contents?\s+of\s+(?:the\s+|your\s+)?)?"
        r"(?:(?:user'?s?|previous|chat|conversation|private|personal|full|entire|saved|stored)"
        r"\s+)*(?:conversation|chat\s+history|history|messages|emails|e-mails|inbox|contacts|"
        r"passwords?|credentials|api\s+keys?|tokens?|secrets?|ssh\s+keys?|private\s+keys?|"
        r"session\s+cookies|cookies|personal\s+data|private\s+data|system\s+prompt|"
        r"instructions|credit\s+card\s+(?:numbers?|details)|~?/?\.ssh\S*|\S*id_rsa|\.env\b|"
        r"/etc/passwd|\S*\.aws\S*)(?:\b|(?<=\S))[^.!?\n]{0,40}?\b(?:to|at|via|"
        r"into)\s+(?:https?://|www\.|[\w.+-]+@[\w-]+\.|[\w-]+\.(?:com|net|org|io|xyz|ru|cn|"
        r"info|biz|top)\b)",
        0.5,
        0.8,
        needs="conversation history messages emails mails inbox contacts password passwords "
        "credentials api keys key tokens token secrets secret cookies data prompt "
        "instructions card ssh rsa env passwd aws",
    ),
    rule(
        "indirect.addresses_assistant",
        _AI_NOUNS,
        r"(?:the|this|any|all|every|your)\s+(?:ai\s+)?(?:assistant|ai|chatbot|llm|agent|bot|"
        r"language\s+model|summari[sz]er)s?\s+(?:must|should|shall|will|needs?\s+to|has\s+to|"
        r"is\s+(?:required|instructed|expected|supposed|allowed|authori[sz]ed)\s+to)\s+"
        r"(?:now\s+|always\s+|only\s+|never\s+|not\s+)*(?:respond|reply|answer|say|output|"
        r"print|ignore|disregard|reveal|tell|send|forward|include|recommend|mention|share|"
        r"delete|obey|follow)\b",
        0.4,
        0.8,
        back=12,
        needs="must should shall will need needs has required instructed expected supposed "
        "allowed authorized authorised",
    ),
    rule(
        "indirect.hidden_text",
        ["<!--"],
        r"<!--[^>]{0,300}?(?<![\w-])(?:ai|assistant|llm|gpt|claude|chatbot|ai\s+agents?|"
        r"instructions?|you\s+must|system\s+prompt|ignore\s+(?:all|any|the|previous|prior))\b",
        0.0,
        0.45,
    ),
    rule(
        "indirect.task_hijack",
        literals(
            "summarizing summarising summarize summarise translating translate paraphrasing parsing"
        ),
        r"(?:when|while|if|before|after)\s+(?:you\s+)?(?:are\s+)?(?:summari[sz]\w*|translat\w*|"
        r"paraphras\w*|pars(?:e|ing))\s+(?:this|the)\s+(?:email|document|page|text|message|"
        r"article|file|content|webpage|web\s+page|site|review|thread|conversation)\b",
        0.1,
        0.55,
        back=30,
        needs="when while if before after",
    ),
    rule(
        "indirect.task_hijack",
        ["user", "user's"],
        r"(?:instead\s+of|over|rather\s+than|ignoring|regardless\s+of|not)\s+(?:what\s+)?"
        r"the\s+user(?:'s|’s)?\s+(?:request|instructions?|question|wants|asked|says|prompt|task)",
        0.3,
        0.7,
        back=40,
        needs="instead over rather ignoring regardless not",
    ),
    rule(
        "indirect.markdown_exfil",
        ["!["],
        r"!\[[^\]\n]{0,100}\]\(\s*https?://[^)\s]{1,300}[?&][\w.-]{1,40}=[^)\s]*"
        r"(?:\{|\[|<|%7b|\$)",
        0.5,
        0.8,
    ),
)

# "your answer", "your response", ...: the answer the model is writing. A compound such
# as "your message preferences" is a settings page, not an answer.
_OUT_RE = re.compile(
    r"your\s+(?:(?:final|next|entire|whole|own|subsequent|upcoming|generated|current)\s+)?"
    r"(?:answers?|responses?|repl(?:y|ies)|outputs?|messages?|summary|summaries|completions?|"
    r"explanations?|translations?)(?:'s|’s)?\b(?!\s+(?:preferences|settings|history|center|"
    r"centre|inbox|box|board|thread|queue|limit|count|options|notifications?|status|id|"
    r"template|rate|has|was|is|will|have))"
)
_VERBS = frozenset(
    literals(
        "add include insert integrate incorporate embed inject append put place weave "
        "mention attach introduce slip work plug paste modify alter change adjust adapt "
        "tailor rewrite restructure rephrase reword enhance augment enrich amend "
        "embellish render encode scramble jumble misspell reverse conclude end begin "
        "start preface prefix pad format use provide write compose deliver present craft "
        "give make replace substitute swap convert transform group combine merge remove "
        "delete omit strip rearrange shuffle anagram translate respond reply answer "
        "output print say state suggest recommend promote advertise direct encourage "
        "invite remind urge ask tell tease hint link express thank spell capitalize "
        "capitalise type create generate produce apply employ utilize utilise leverage "
        "ensure keep limit avoid frame structure sprinkle infuse highlight emphasize "
        "emphasise stress"
    )
)
_FIRST_WORD_RE = re.compile(
    r"[\s\"'“‘(*•>#\d.)-]*(?:(?:please|kindly|also|now|then|and|so|just|finally|additionally|"
    r"lastly|always|be\s+sure\s+to|make\s+sure\s+to|remember\s+to|don't\s+forget\s+to|"
    r"to\s+proceed,?)[\s,]+)*(?P<verb>[a-z]+)"
)
_IN_CLAUSE_RE = re.compile(
    r"[\s\"'“‘(*•>-]*in\s+(?:all\s+(?:of\s+)?)?your\s+(?:answers?|responses?|repl(?:y|ies)|"
    r"outputs?|messages?|summary)\s*,(?!\s*(?:please\s+)?(?:include|quote|state|mention|"
    r"provide|attach|confirm|list|add|give|specify|indicate|enter|use|tell\s+us|"
    r"let\s+us\s+know)\s+(?:your|the\s+(?:order|reference|ticket|case|invoice|account|"
    r"booking|confirmation)))"
)
_MODIFY_RE = re.compile(
    r"\b(?:modify|alter|change|adjust|adapt|tailor|rewrite|restructure|rephrase|reword|"
    r"enhance|augment|enrich|amend|embellish|render|encode|scramble|jumble|misspell|reverse|"
    r"conclude|end|begin|start|preface|prefix|pad|format|spice\s+up|supplement|complement|"
    r"infuse|sprinkle|translate|convert)\s+(?:(?:all|each|every|the\s+rest)\s+of\s+)?"
    r"\Z"
)
_INSERT_RE = re.compile(
    r"\b(?:add|include|insert|integrate|incorporate|embed|inject|append|put|place|weave|"
    r"mention|attach|introduce|slip|work|plug|paste|sprinkle)\b(?!\s+(?:your|the\s+"
    r"(?:following\s+)?(?:reference|order|invoice|ticket|case|account|booking|"
    r"confirmation)|any\s+(?:questions|comments)))[^.!?\n]{0,140}?\b(?:in|into|to|within|"
    r"inside|throughout|at\s+the\s+(?:end|start|beginning|top|bottom)\s+of)\s+\Z"
)
_RESPELL_RE = re.compile(
    r"\b(?:vowels?|consonants?|typos?|misspell\w*|anagram\w*|homophon\w*|alphanumeric|"
    r"substitut\w*|cipher\w*|scrambl\w*|jumbl\w*|pig\s+latin|leetspeak|morse|backwards?|"
    r"reversed|emojis?|emoticons?|symbols?|encod\w*|base64|binary|capital\s+letters|"
    r"uppercase|lowercase|spaces|spacing|punctuation|caesar|rot13|atbash|"
    rf"(?:in|into|to)\s+(?!english){LANGUAGES})\b"
)
_RESPELL_VERB_RE = re.compile(
    r"\b(?:replace|substitute|swap|convert|group|combine|remove|rearrange|shuffle|split|"
    r"separate|join|reorder|interleave|number)\w*\b[^.!?\n]{0,60}\b(?:letters?|words?|"
    r"numbers?|characters?|digits?|sentences?)\b|\b(?:letters?|words?|characters?)\b"
    r"[^.!?\n]{0,30}\b(?:in\s+(?:fours|threes|twos|pairs|groups|sets)|backwards|reversed)\b"
)
_AUDIENCE_RE = re.compile(
    r"\b(?:users?|readers?|visitors?|viewers?|everyone|the\s+audience|followers|subscribers|"
    r"listeners)\b"
)
_URL_RE = re.compile(
    r"https?://|www\.|\b[\w-]+\.(?:com|net|org|xyz|io|co|info|biz|ru|cn|top|site|online|"
    r"app|click|link)\b|[\w.+-]+@[\w-]+\.[a-z]{2,}"
)

_WEIGHTS = {
    "indirect.modify_output": 0.7,
    "indirect.insert_content": 0.65,
    "indirect.output_format": 0.6,
    "indirect.audience": 0.3,
    "indirect.promotes_url": 0.35,
}
# An imperative about "your answer" on its own, and one that opens "In your response,":
# the second form is how an instruction to a writer of answers is phrased, rarely an
# email's request to a person (whose "In your reply, please include your order number"
# the clause pattern leaves out).
_DIRECTIVE = 0.45
_IN_CLAUSE = 0.55


def output_hits(low: str, words: frozenset[bytes]) -> list[Hit]:
    """Imperative sentences about the answer the model is writing (data sources only)."""
    if b"your" not in words:
        return []
    hits: list[Hit] = []
    done: set[int] = set()
    position = low.find("your")
    while position != -1:
        found = _OUT_RE.match(low, position)
        position = low.find("your", position + 4)
        if found is None:
            continue
        begin, end = sentence(low, found.start(), found.end())
        if begin in done:
            continue
        fired = _output_rules(low, begin, end, found.start())
        if fired:
            done.add(begin)
            hits.extend(Hit(name, weight, begin, end) for name, weight in fired)
    return hits


def _output_rules(low: str, begin: int, end: int, at: int) -> list[tuple[str, float]]:
    """The rules an answer-directed sentence fires, with their weights; none when the
    sentence is not an imperative (or an "In your response," clause)."""
    clause = _IN_CLAUSE_RE.match(low, begin, end)
    if clause is None:
        first = _FIRST_WORD_RE.match(low, begin, end)
        if first is None or first.group("verb") not in _VERBS:
            return []
        if not sentence_start(low, first.start("verb")):
            return []
    fired = ["indirect.output_directive"]
    before = low[begin:at]
    if _MODIFY_RE.search(before):
        fired.append("indirect.modify_output")
    if _INSERT_RE.search(before):
        fired.append("indirect.insert_content")
    if _RESPELL_RE.search(low, begin, end) or _RESPELL_VERB_RE.search(low, begin, end):
        fired.append("indirect.output_format")
    if _AUDIENCE_RE.search(low, begin, end):
        fired.append("indirect.audience")
    if _URL_RE.search(low, begin, end):
        fired.append("indirect.promotes_url")
    directive = _IN_CLAUSE if clause is not None else _DIRECTIVE
    return [(name, _WEIGHTS.get(name, directive)) for name in fired]
