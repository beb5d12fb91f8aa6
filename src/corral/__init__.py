"""Corral: the reliability and governance layer for LLM agents."""

from corral.calls import (
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    RunStatus,
    ToolCall,
    ToolCallRequest,
    ToolResult,
    Usage,
)
from corral.policy import LivePolicy, Policy, PolicyError, load_policy

__version__ = "0.1.0"

__all__ = [
    "Call",
    "Halt",
    "HaltReason",
    "LLMCall",
    "LLMResult",
    "LivePolicy",
    "Policy",
    "PolicyError",
    "RunStatus",
    "ToolCall",
    "ToolCallRequest",
    "ToolResult",
    "Usage",
    "__version__",
    "load_policy",
]
