"""Corral: the reliability and governance layer for LLM agents."""

from corral.calls import (
    Call,
    Denied,
    Halt,
    Halted,
    HaltReason,
    LLMCall,
    LLMResult,
    Rejected,
    RunStatus,
    ToolCall,
    ToolCallRequest,
    ToolResult,
    UpstreamUnavailable,
    Usage,
)
from corral.gates.ratelimit import RateLimited
from corral.policy import LivePolicy, Policy, PolicyError, load_policy
from corral.providers.base import FailureKind, ProviderError
from corral.runtime.run import Run
from corral.runtime.supervisor import Supervisor
from corral.runtime.sync import SyncRun, SyncSupervisor
from corral.tools.registry import ToolArgumentError

__version__ = "0.1.0"

__all__ = [
    "Call",
    "Denied",
    "FailureKind",
    "Halt",
    "HaltReason",
    "Halted",
    "LLMCall",
    "LLMResult",
    "LivePolicy",
    "Policy",
    "PolicyError",
    "ProviderError",
    "RateLimited",
    "Rejected",
    "Run",
    "RunStatus",
    "Supervisor",
    "SyncRun",
    "SyncSupervisor",
    "ToolArgumentError",
    "ToolCall",
    "ToolCallRequest",
    "ToolResult",
    "UpstreamUnavailable",
    "Usage",
    "__version__",
    "load_policy",
]
