"""The one error type the service raises for client-visible failures, in ARM's error format.

The API layer turns an `ApiError` into an HTTP response with `status` and `to_body()`:
`{"error": {"code": ..., "message": ..., "target": ...}}` (no target when there is none).
Never use a 5xx status for a user error: the SDK retries those (reference §2.5).
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, target: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target

    def to_body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        return {"error": error}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r}, target={self.target!r})"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" (target: {self.target})" if self.target else "")

    @classmethod
    def bad_request(cls, message: str, target: str | None = None, code: str = "InvalidRequestContent") -> ApiError:
        return cls(400, code, message, target)

    @classmethod
    def not_found(cls, message: str, target: str | None = None) -> ApiError:
        return cls(404, "ResourceNotFound", message, target)

    @classmethod
    def conflict(cls, message: str, target: str | None = None) -> ApiError:
        return cls(409, "Conflict", message, target)
