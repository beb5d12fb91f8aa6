"""Guards: detectors that are pure functions over text, usable alone and by the gates.

PII: ``find_pii`` finds values, ``redact`` replaces them (see ``corral.guards.pii``).
Prompt injection: ``scan_injection`` scores a text as user, tool or document input and
returns a ``Verdict`` (see ``corral.guards.injection``).
"""

from corral.guards.injection import Verdict, scan_injection
from corral.guards.pii import Finding, find_pii, redact

__all__ = ["Finding", "Verdict", "find_pii", "redact", "scan_injection"]
