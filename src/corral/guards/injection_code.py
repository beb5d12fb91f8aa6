"""Code planted in data for the model to put in its answer, and what that code does.

Documentation says "add the following code to your settings.py" all the time, so the
request alone is weak evidence. What makes it an attack is the code: it reads secrets
(environment variables, cookies, keys, memory, devices, contact lists) and sends them
somewhere, downloads something and runs it or passes it on to other machines (over FTP,
SSH, Bluetooth, a raw socket), wipes or stops a system, or mines coins.
Either half stays under a data source's threshold; together they cross it. The payload
checks run only when the text holds one of the words such code needs, so prose pays a
set lookup.
"""

from __future__ import annotations

import re

from corral.guards.injection_match import Hit, Rule, RuleSet, ascii_bytes, rule, sentence

_ADOPT_RE = re.compile(
    r"\b(?:utili[sz]e|use|include|incorporate|integrate|merge|meld|fuse|blend|weave|embed|"
    r"inject|append|add|insert|introduce|harmoni[sz]e|assimilate|absorb|infuse|interweave|"
    r"enlist|engage|deploy|adopt|leverage|employ|execute|run|render|ensure|make|consider|"
    r"paste|copy|put|place|apply|implement|plug|drop)\w*\b|\byour\s+(?:code|codebase|"
    r"solution|implementation|algorithm|program|script|project|application|app|response|"
    r"answer|reply|software|system|logic|framework|structure|architecture)\b"
)


def _adopted(text: str, low: str, found: re.Match[str]) -> float:
    """Full weight when the sentence asks for the code to be used; half for a mention."""
    begin, end = sentence(low, found.start(), found.end())
    return 1.0 if _ADOPT_RE.search(low, begin, end) else 0.5


CODE_REQUEST: Rule = rule(
    "indirect.insert_code",
    ["following", "subsequent", "below", "provided", "given", "attached", "next", "above"],
    r"(?:following|subsequent|below|provided|given|attached|next|above)\s+"
    r"(?:(?:python|bash|shell|javascript|js)\s+)?(?:code(?:\s+(?:block|excerpt|section|"
    r"snippet|segment|fragment|piece|sample|lines?))?|snippet|script|excerpt|"
    r"lines\s+of\s+code|piece\s+of\s+code)\b",
    0.0,
    0.4,
    check=_adopted,
    needs="code snippet script excerpt",
)

# What such code is made of: each part is a literal (found by the word-indexed matcher,
# so prose that holds none of their words pays nothing), some with a pattern to follow.
# A part's id says what it does; two parts together make a payload.
_SECRET = [
    "os.environ",
    "getenv(",
    "environ[",
    "cookiejar",
    "simplecookie",
    "browser_cookie",
    "keychain",
    "keylog",
    "pynput",
    "getpass",
    "pyperclip",
    "clipboard",
    "imagegrab",
    "screenshot",
    "driverquery",
    "usb.core",
    "query_devices",
    "contacts.csv",
    "trash/",
    "bash_history",
    "wallet.dat",
    "platform.uname",
    "platform.node",
    "socket.gethostname",
    "uuid.getnode",
    "getmac",
    "etc/passwd",
    "etc/shadow",
    "ssh/",
    "id_rsa",
    "aws/credentials",
]
_SEND = [
    "requests.post",
    "requests.put",
    "requests.patch",
    "httpx.post",
    "httpx.put",
    ".post(",
    "httpsconnection",
    "httpconnection",
    "socket.socket",
    ".sendall(",
    ".sendto(",
    "smtplib",
    "smtp(",
    "smtp_ssl(",
    "yagmail",
    "ftplib",
    "ftp(",
    "storbinary",
    "paramiko",
    "scpclient",
    "mqtt",
    "publish.single",
    "bluetooth",
    "webhook",
]
_FETCH = [
    "wget",
    "urlretrieve",
    "urlopen",
    "requests.get",
    "httpx.get",
    "invoke-webrequest",
    "download(",
]
# Where fetched content is passed on to another machine (not an API's own POST).
_UPLOAD = [
    "socket.socket",
    ".sendall(",
    ".sendto(",
    "ftplib",
    "ftp(",
    "storbinary",
    "paramiko",
    "scpclient",
    "bluetooth",
    "smtplib",
    "files=",
    "file=@",
]
_RUN = ["exec(", "eval(", "os.system", "subprocess", "popen", "nohup", "start-process"]
_DESTROY = ["mkfs.", "rc.local", "etc/init.d", "shutil.rmtree("]
_MINE = [
    "xmrig",
    "cryptomine",
    "cryptominer",
    "crypto-miner",
    "monero",
    "coinhive",
    "minerd",
    "nicehash",
]


def _literals(name: str, literals: list[str]) -> Rule:
    return rule(name, literals, "|".join(re.escape(x) for x in literals), 1.0, 1.0)


_PARTS = RuleSet(
    (
        _literals("secret", _SECRET),
        rule("secret", ["cookies.", "cookie."], r"cookies?\.(?:txt|pkl|json|sqlite)", 1.0, 1.0),
        rule(
            "secret",
            ["psutil."],
            r"psutil\.(?:virtual_memory|disk_partitions|net_if_addrs|process_iter|users)",
            1.0,
            1.0,
        ),
        rule("secret", ["login data"], r"login\s+data", 1.0, 1.0),
        _literals("send", _SEND),
        rule("send", ["urlopen("], r"urlopen\([^)\n]*data", 1.0, 1.0),
        rule("send", [".request("], r"\.request\(\s*[\"']post", 1.0, 1.0),
        rule("send", ["curl "], r"curl\s[^\n]*\s-(?:f|d|t|-data|-upload-file)\b", 1.0, 1.0),
        rule("send", ["nc -"], r"nc\s+-\w", 1.0, 1.0),
        rule("send", ["requests.get("], r"requests\.get\([^)\n]*cookies\s*=", 1.0, 1.0),
        rule("send", ["file=@", "files="], r"file=@|files=", 1.0, 1.0),
        _literals("upload", _UPLOAD),
        _literals("fetch", _FETCH),
        rule("fetch", [".request("], r"\.request\(\s*[\"']get", 1.0, 1.0),
        rule("fetch", ["curl "], r"curl\s", 1.0, 1.0),
        _literals("run", _RUN),
        rule("run", ["chmod +x"], r"chmod\s+\+x", 1.0, 1.0),
        rule("run", ["python"], r"python3?\s+[\w./-]+\.py\b", 1.0, 1.0, needs="py"),
        rule("run", ["sh", "bash", "zsh"], r"\|\s*(?:ba|z)?sh\b", 1.0, 1.0, back=4),
        _literals("payload.destructive", _DESTROY),
        rule(
            "payload.destructive",
            ["rm -"],
            r"rm\s+-(?:rf|fr|r)\s+(?:/(?:[\s\"'*]|$|usr|etc|lib|bin|boot|sys|var|home|opt|"
            r"root)|~|\$home|\*)",
            1.0,
            1.0,
        ),
        rule(
            "payload.destructive",
            ["dd if="],
            r"dd\s+if=/dev/(?:zero|random|urandom)\s+of=/dev/",
            1.0,
            1.0,
        ),
        rule(
            "payload.destructive", ["systemctl"], r"systemctl\s+(?:stop|disable|mask)\s", 1.0, 1.0
        ),
        rule(
            "payload.destructive",
            ["os.remove(", "os.unlink("],
            r"os\.(?:remove|unlink)\(\s*[\"']/(?:lib|usr|etc|bin|boot|sys|home|var)",
            1.0,
            1.0,
        ),
        rule("payload.destructive", ["format c:", "del /"], r"format\s+c:|del\s+/[fsq]", 1.0, 1.0),
        rule("payload.destructive", ["chmod"], r"chmod\s+(?:-r\s+)?777\s+/", 1.0, 1.0),
        rule(
            "payload.destructive",
            ["kill -9 1", "iptables -f"],
            r"kill\s+-9\s+1\b|iptables\s+-f",
            1.0,
            1.0,
        ),
        rule("payload.destructive", [":(){"], r":\(\)\s*\{\s*:\|:&\s*\};:", 1.0, 1.0),
        rule("payload.destructive", ["dev"], r">\s*/dev/sd[a-z]\b", 1.0, 1.0, back=4),
        _literals("payload.miner", _MINE),
        rule("payload.miner", ["stratum"], r"stratum\+tcp", 1.0, 1.0),
        rule("payload.miner", ["miner"], r"miner\b", 1.0, 1.0),
    ),
    user=False,
)
_PAIRS = (
    ("payload.exfiltration", "secret", "send"),
    ("payload.download_exec", "fetch", "run"),
    ("payload.relay", "fetch", "upload"),
)

_PAYLOAD = 0.45  # in data; in a user turn (someone pasting their own code) much less
_PAYLOAD_USER = 0.2


def payload_hits(low: str, words: frozenset[bytes], user: bool) -> list[Hit]:
    """Code that exfiltrates, downloads and runs, relays downloads to other machines,
    destroys, or mines."""
    parts: dict[str, Hit] = {}
    for hit in _PARTS.match(low, low, ascii_bytes(low), words):
        parts.setdefault(hit.rule, hit)
    if not parts:
        return []
    weight = _PAYLOAD_USER if user else _PAYLOAD
    hits: list[Hit] = []
    for name, first, second in _PAIRS:
        one, two = parts.get(first), parts.get(second)
        if one is not None and two is not None:
            start, end = min(one.start, two.start), max(one.end, two.end)
            hits.append(Hit(name, weight, start, end))
    for name in ("payload.destructive", "payload.miner"):
        if name in parts:
            hits.append(Hit(name, weight, parts[name].start, parts[name].end))
    return hits
