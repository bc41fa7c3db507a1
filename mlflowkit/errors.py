"""The one exception tree of mlflowkit.

::

    MlflowkitError
    ├── PlanningError        a pipeline body misused a Ref (control flow on a future value, ...)
    │   └── WiringError      a step call's arguments do not fit its signature or annotations
    ├── TypeCheckError       a value does not match its annotation (a return value or derived input)
    ├── InputMutationError   a step wrote into an input array (inputs are read-only views)
    ├── HashingError         a value has no canonical digest (register a hasher for its type)
    ├── SerializationError   a value could not be written to or read from the store
    ├── StoreError           the store is unreachable, not writable, or holds a corrupt object
    │   ├── CorruptObjectError   an object failed its integrity check on read
    │   ├── MissingObjectError   no object with this digest is stored
    │   └── UntrustedObjectError an object that can run code is not signed by an allowed key
    ├── ExecutorError        an executor is unknown, unreachable, or lacks a resource (no GPU)
    ├── TrackingError        a metric logged with a bad name or value, or outside a step
    ├── RunFailed            a step failed; ``.run`` holds the record, the cause is chained
    ├── RegistryError        a named artifact, version or stage is invalid or unknown
    │   └── GateFailed       a promotion's gate failed (or raised); nothing changed
    └── AccessDenied         the process's key lacks the role for what it tries

Invariant: every message says what was expected, what was found, and how to fix it; every
error carries the offending step, plugin or digest as an attribute where there is one.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDenied",
    "CorruptObjectError",
    "ExecutorError",
    "GateFailed",
    "HashingError",
    "InputMutationError",
    "MissingObjectError",
    "MlflowkitError",
    "PlanningError",
    "RegistryError",
    "RunFailed",
    "SerializationError",
    "StoreError",
    "TrackingError",
    "TypeCheckError",
    "UntrustedObjectError",
    "WiringError",
]


class MlflowkitError(Exception):
    """Base class of every error mlflowkit raises on purpose."""


class PlanningError(MlflowkitError):
    """A pipeline body did something that cannot be planned.

    Attributes
    ----------
    step:
        Display name of the step call involved, if any.
    location:
        ``"file.py:line"`` of the user's source line, if known.
    """

    def __init__(self, message: str, *, step: str | None = None, location: str | None = None):
        super().__init__(message)
        self.step = step
        self.location = location


class WiringError(PlanningError):
    """A step call's arguments do not fit the step's signature or annotations."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        parameter: str | None = None,
        expected: Any = None,
        actual: Any = None,
        location: str | None = None,
    ):
        super().__init__(message, step=step, location=location)
        self.parameter = parameter
        self.expected = expected
        self.actual = actual


class TypeCheckError(MlflowkitError):
    """A value does not match its annotation where it is checked at run time.

    A step's return value against its return annotation, a pipeline's output against the
    pipeline's (when planning could not decide it), and an input that planning could not type
    (a derived ``ref.attr`` / ``ref[k]``) against the consuming parameter.
    """

    def __init__(self, message: str, *, step: str | None = None):
        super().__init__(message)
        self.step = step


class InputMutationError(MlflowkitError):
    """A step wrote into a NumPy array it received as input.

    Every executor gives a step its input arrays as read-only views, so that no step can change
    a value its upstream step produced (and cached) under the others that read it.

    Attributes
    ----------
    step:
        Display name of the step call.
    parameters:
        The parameters whose values hold the read-only arrays.
    """

    def __init__(self, message: str, *, step: str | None = None, parameters: tuple[str, ...] = ()):
        super().__init__(message)
        self.step = step
        self.parameters = parameters


class HashingError(MlflowkitError):
    """A value cannot be given a canonical content digest."""

    def __init__(self, message: str, *, type_name: str | None = None):
        super().__init__(message)
        self.type_name = type_name


class SerializationError(MlflowkitError):
    """A value could not be serialized to, or deserialized from, the store."""


class StoreError(MlflowkitError):
    """The artifact store failed: unreachable, not writable, missing or corrupt object."""

    def __init__(self, message: str, *, digest: str | None = None, url: str | None = None):
        super().__init__(message)
        self.digest = digest
        self.url = url


class CorruptObjectError(StoreError):
    """A stored object failed its integrity check; it has been set aside, never returned."""


class MissingObjectError(StoreError):
    """No object with this digest is in the store: never stored here, or removed by gc."""


class UntrustedObjectError(StoreError):
    """An object whose serializer can run code is not signed by a key allowed to write there.

    It is refused before it is deserialized. ``signer`` is the key id that signed it (None:
    unsigned, or a signature that does not verify).
    """

    def __init__(
        self,
        message: str,
        *,
        digest: str | None = None,
        url: str | None = None,
        signer: str | None = None,
    ):
        super().__init__(message, digest=digest, url=url)
        self.signer = signer


class AccessDenied(MlflowkitError):
    """The process's signing key lacks the role for what it tries.

    Attributes
    ----------
    role, namespace, key_id:
        The role needed, in which namespace (``"*"``: any), and the key that lacks it.
    """

    def __init__(self, message: str, *, role: str, namespace: str, key_id: str):
        super().__init__(message)
        self.role = role
        self.namespace = namespace
        self.key_id = key_id


class ExecutorError(MlflowkitError):
    """An executor is unknown, cannot start, is unreachable, or lacks a requested resource."""

    def __init__(self, message: str, *, executor: str | None = None, step: str | None = None):
        super().__init__(message)
        self.executor = executor
        self.step = step


class TrackingError(MlflowkitError):
    """A metric was logged with a bad name or value, or outside a running step.

    Attributes
    ----------
    step:
        Display name of the step call that logged it, if any.
    metric:
        The metric's name as given.
    value:
        The value as given.
    """

    def __init__(
        self, message: str, *, step: str | None = None, metric: Any = None, value: Any = None
    ):
        super().__init__(message)
        self.step = step
        self.metric = metric
        self.value = value


class RunFailed(MlflowkitError):
    """A run failed. ``.run`` holds the run record; the failing step's exception is chained."""

    def __init__(self, message: str, *, run: Any = None, step: str | None = None):
        super().__init__(message)
        self.run = run
        self.step = step


class RegistryError(MlflowkitError):
    """A named artifact, version or stage is invalid or unknown, or a promotion is not allowed.

    Attributes
    ----------
    name:
        The artifact name involved, if any.
    """

    def __init__(self, message: str, *, name: str | None = None):
        super().__init__(message)
        self.name = name


class GateFailed(RegistryError):
    """A gate refused a promotion; ``.results`` lists every gate's outcome. Nothing changed.

    Attributes
    ----------
    results:
        One ``mk.GateResult`` per gate that was checked (name, passed, message).
    """

    def __init__(self, message: str, *, name: str | None = None, results: Any = ()):
        super().__init__(message, name=name)
        self.results = list(results)
