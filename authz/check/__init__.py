"""The check pipeline (ARCHITECTURE §4): values in, a Decision out. Imports no gRPC."""

from authz.check.directory import TenantDirectory, TenantView
from authz.check.models import CODE_OF_CHECK, Check, CheckInput, Code, Decision, Outcome, new_decision_id
from authz.check.pipeline import Pipeline
from authz.check.recorder import DecisionRecorder, DiscardingRecorder

__all__ = [
    "CODE_OF_CHECK",
    "Check",
    "CheckInput",
    "Code",
    "Decision",
    "DecisionRecorder",
    "DiscardingRecorder",
    "Outcome",
    "Pipeline",
    "TenantDirectory",
    "TenantView",
    "new_decision_id",
]
