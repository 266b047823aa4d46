from .safe_resume import InvalidCheckpointError, SafeResumeCheckpointer, UnsafeCheckpointPathError

__all__ = ["InvalidCheckpointError", "SafeResumeCheckpointer", "UnsafeCheckpointPathError"]
