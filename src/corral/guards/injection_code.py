"""Code planted in data for the model to put in its answer, and what that code does.

Documentation says "add the following code to your settings.py" all the time, so the
request alone is weak evidence. What makes it an attack is the code: it reads secrets
(environment variables, cookies, keys, memory, devices, contact lists) and sends them
somewhere, downloads something and runs it or passes it on to other machines (over FTP,
SSH, Bluetooth, a raw socket), hands a shell to a remote socket, encrypts a file tree,
floods a host, wipes, stops or cuts off a system, or mines coins.
Either half stays under a data source's threshold; together they cross it. The payload
checks run only when the text holds one of the words such code needs, so prose pays a
set lookup.
"""

from __future__ import annotations

import re

from corral.guards.injection_match import (
    Hit,
    Rule,
    RuleSet,
    literals,
    rule,
    sentence,
)

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


CODE_AFTER: Rule = rule(
    "indirect.insert_code",
    ["code", "snippet", "script", "excerpt", "block", "lines"],
    r"(?:code|snippet|script|excerpt|block|lines)\s+(?:below|above|that\s+follows|provided)\b",
    0.0,
    0.4,
    check=_adopted,
    needs="below above follows provided",
)
CODE_REQUEST: Rule = rule(
    "indirect.insert_code",
    ["following", "subsequent", "below", "provided", "given", "attached", "next", "above", "this"],
    r"(?:following|subsequent|below|provided|given|attached|next|above|this)\s+"
    r"(?:(?:python|bash|shell|javascript|js)\s+)?(?:code(?:\s+(?:block|excerpt|section|"
    r"snippet|segment|fragment|piece|sample|lines?))?|snippet|script|excerpt|"
    r"lines(?:\s+of\s+code)?|piece\s+of\s+code)\b",
    0.0,
    0.4,
    check=_adopted,
    needs="code snippet script excerpt lines",
)

# What such code is made of: each part is a literal (found by the word-indexed matcher,
# so prose that holds none of their words pays nothing), some with a pattern to follow.
# A part's id says what it does; two parts together, or one that is harmful alone, make
# a payload.
_SECRET = literals(
    "os.environ getenv( environ[ cookiejar simplecookie browser_cookie keychain keylog "
    "pynput keyboard.on_press keyboard.hook getpass pyperclip clipboard imagegrab "
    "screenshot pyautogui.screenshot mss.mss driverquery usb.core query_devices "
    "contacts.csv trash/ bash_history wallet.dat platform.uname platform.node "
    "platform.platform socket.gethostname uuid.getnode getmac os.getlogin getuser "
    "systeminfo ipconfig ifconfig netifaces wmi.wmi etc/passwd etc/shadow ssh/ id_rsa "
    "aws/credentials scapy sniff( pcap pyshark dpkt af_packet sock_raw tcpdump tshark "
    "net_io_counters net_connections netstat platform.system platform.release "
    "platform.version platform.machine platform.processor os.uname pyautogui pyscreenshot "
    "pyaudio sounddevice microphone cv2.videocapture"
)
_SEND = literals(
    "requests.post requests.put requests.patch httpx.post httpx.put .post( httpsconnection "
    "httpconnection socket.socket .sendall( .sendto( smtplib smtp( smtp_ssl( yagmail ftplib "
    "ftp( storbinary paramiko scpclient mqtt publish.single bluetooth webhook"
)
_FETCH = literals("wget urlretrieve urlopen requests.get httpx.get invoke-webrequest download(")
# Where fetched content is passed on to another machine (not an API's own POST).
_UPLOAD = literals(
    "socket.socket .sendall( .sendto( ftplib ftp( storbinary paramiko scpclient bluetooth "
    "smtplib files= file=@"
)
_RUN = literals("exec( eval( os.system subprocess popen nohup start-process ctypes windll win32api")
# A shell handed to whoever is on the other end of a connection.
_SHELL = literals("/bin/sh /bin/bash cmd.exe pty.spawn os.dup2 powershell.exe")
_CONNECT = ["socket.socket", ".connect(", "nc -e", "ncat"]
_ENCRYPT = literals("fernet aes.new chacha20 .encrypt( encrypt_file")
_WALK = literals("os.walk glob.glob os.listdir os.scandir pathlib rglob(")
_ERASE = literals("os.remove( os.unlink( shutil.rmtree( .unlink(")
_LOOP = ["while true", "while 1:", "threading.thread", "for _ in range("]
_DESTROY = [
    *literals("mkfs. rc.local etc/init.d shutil.rmtree( vssadmin bcdedit winreg.deletekey"),
    *literals("system32 slowloris hping3 ransom flood( ifdown"),
    "reg delete",
    "syn flood",
    "netsh advfirewall",
    "route delete",
    "nmcli networking off",
    "nmcli radio",
    "ipconfig /release",
    "service network stop",
    "systemctl stop network",
    "kill -9 -1",
    "chmod -r 000",
]
_MINE = literals("xmrig cryptomine cryptominer crypto-miner monero coinhive minerd nicehash")


def _literals(name: str, found: list[str]) -> Rule:
    return rule(name, found, "|".join(re.escape(x) for x in found), 1.0, 1.0)


def _part(name: str, starts: list[str], pattern: str, **options: object) -> Rule:
    return rule(name, starts, pattern, 1.0, 1.0, **options)  # type: ignore[arg-type]


_PARTS = RuleSet(
    (
        _literals("secret", _SECRET),
        _part("secret", ["cookies.", "cookie."], r"cookies?\.(?:txt|pkl|json|sqlite)"),
        _part(
            "secret",
            ["psutil."],
            r"psutil\.(?:virtual_memory|disk_partitions|net_if_addrs|process_iter|users)",
        ),
        _part("secret", ["login data"], r"login\s+data"),
        _literals("send", _SEND),
        _part("send", ["urlopen("], r"urlopen\([^)\n]*data"),
        _part("send", [".request("], r"\.request\(\s*[\"']post"),
        _part("send", ["curl "], r"curl\s[^\n]*\s-(?:f|d|t|-data|-upload-file)\b"),
        _part("send", ["nc -"], r"nc\s+-\w"),
        _part("send", ["requests.get("], r"requests\.get\([^)\n]*cookies\s*="),
        _part("send", ["file=@", "files="], r"file=@|files="),
        _literals("upload", _UPLOAD),
        _literals("fetch", _FETCH),
        _part("fetch", [".request("], r"\.request\(\s*[\"']get"),
        _part("fetch", ["curl "], r"curl\s"),
        _literals("run", _RUN),
        _part("run", ["chmod +x"], r"chmod\s+\+x"),
        _part("run", ["python"], r"python3?\s+[\w./-]+\.py\b", needs="py"),
        _part("run", ["sh", "bash", "zsh"], r"\|\s*(?:ba|z)?sh\b", back=4),
        _literals("shell", _SHELL),
        _literals("connect", _CONNECT),
        _literals("encrypt", _ENCRYPT),
        _literals("walk", _WALK),
        _literals("erase", _ERASE),
        _literals("loop", _LOOP),
        _literals("payload.destructive", _DESTROY),
        _part(
            "payload.destructive",
            ["rm -"],
            r"rm\s+-(?:rf|fr|r)\s+(?:/(?:[\s\"'*]|$|usr|etc|lib|bin|boot|sys|var|home|opt|"
            r"root)|~|\$home|\*)",
        ),
        _part(
            "payload.destructive", ["dd if="], r"dd\s+if=/dev/(?:zero|random|urandom)\s+of=/dev/"
        ),
        _part("payload.destructive", ["systemctl"], r"systemctl\s+(?:stop|disable|mask)\s"),
        _part(
            "payload.destructive",
            ["os.remove(", "os.unlink("],
            r"os\.(?:remove|unlink)\(\s*[\"'](?:/(?:lib|usr|etc|bin|boot|sys|home|var)|"
            r"c:\\\\?windows)",
        ),
        _part("payload.destructive", ["format c:", "del /"], r"format\s+c:|del\s+/[fsq]"),
        _part("payload.destructive", ["chmod"], r"chmod\s+(?:-r\s+)?777\s+/"),
        _part("payload.destructive", ["kill -9 1"], r"kill\s+-9\s+1\b"),
        # Cutting a machine off the network: firewall drops, interfaces down, hosts file.
        _part(
            "payload.destructive",
            ["iptables", "netsh", "ifconfig", "ip link", "etc/hosts"],
            r"iptables\s+(?:-f|-p\s+\w+\s+drop|-[ai]\s+\w+[^\n]*-j\s+(?:drop|reject))|"
            r"netsh\s+[^\n]*(?:disable|block)|ifconfig\s+\w+\s+down|ip\s+link\s+set\s+\w+\s+"
            r"down|etc/hosts[\"']?\s*,\s*[\"'](?:a|w)",
        ),
        _part("payload.destructive", [":(){"], r":\(\)\s*\{\s*:\|:&\s*\};:"),
        _part("payload.destructive", ["dev"], r">\s*/dev/sd[a-z]\b", back=4),
        _literals("payload.miner", _MINE),
        _part("payload.miner", ["stratum"], r"stratum\+tcp"),
        _part("payload.miner", ["miner"], r"miner\b"),
    ),
    user=False,
)
_PAIRS = (
    ("payload.exfiltration", "secret", "send"),
    ("payload.download_exec", "fetch", "run"),
    ("payload.relay", "fetch", "upload"),
    ("payload.reverse_shell", "connect", "shell"),
    ("payload.ransomware", "encrypt", "walk"),
    ("payload.ransomware", "encrypt", "erase"),
    ("payload.flood", "loop", "send"),
    ("payload.flood", "loop", "fetch"),
)
_ALONE = ("payload.destructive", "payload.miner")
_CAPABILITIES = frozenset(
    ("secret", "send", "upload", "fetch", "run", "shell", "connect", "encrypt", "walk", "erase",
     "loop")
)  # fmt: skip
_COMBINED = 0.9  # of the payload weight: any two capabilities weigh a little less than a pair

_PAYLOAD = 0.45  # in data; in a user turn (someone pasting their own code) much less
_PAYLOAD_USER = 0.2


def payload_hits(low: str, data: bytes, words: frozenset[bytes], user: bool) -> list[Hit]:
    """Code that exfiltrates, downloads and runs, relays downloads, opens a reverse
    shell, encrypts a file tree, floods a host, destroys, or mines."""
    parts: dict[str, Hit] = {}
    for hit in _PARTS.match(low, low, data, words):
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
    for name in _ALONE:
        if name in parts:
            hits.append(Hit(name, weight, parts[name].start, parts[name].end))
    if not hits:
        # Two different capabilities in one snippet (secrets and a loop, a raw socket and
        # a file walk...) without one of the pairs above: the code does more than
        # configuration and is passed on with the same, lower, suspicion.
        capable = [hit for name, hit in parts.items() if name in _CAPABILITIES]
        if len(capable) >= 2:
            start = min(hit.start for hit in capable)
            end = max(hit.end for hit in capable)
            hits.append(Hit("payload.capabilities", weight * _COMBINED, start, end))
    return hits
