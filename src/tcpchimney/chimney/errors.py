"""``ContractViolation``: a broken chimney rule, named by the invariant it breaks (reference section 8)."""

from __future__ import annotations

from enum import Enum


class Rule(Enum):
    """Each rule the mediator checks at run time: (invariant number, short name)."""

    TREE_SHAPE = (1, "block tree has at most neighbor -> path -> TCP layers, NextBlock within one layer")
    STATUS_MISSING = (2, "every block carries an allowed Status before the completion")
    COMPLETED_SYNCHRONOUSLY = (3, "completion must come after the handler returned")
    CONTEXT_WRITE = (4, "MiniportOffloadContext written iff that object's offload succeeded")
    INITIATE_WALK = (5, "initiate statuses follow the depth-first/breadth-next rules")
    PLACEHOLDER_LINKER_STATUS = (6, "placeholders report SUCCESS; linkers by their dependents")
    OP_DURING_INITIATE = (7, "no operation on an object whose initiate is in flight")
    UPDATE_RULES = (8, "one update at a time; none while offloading or invalidated; cached fields only")
    TERMINATE_ORDER = (9, "no path/neighbor terminated while it has dependents; terminate after ops completed")
    IO_AFTER_TERMINATE = (10, "no sends, receives or forwards after terminate was called")
    OFFLOAD_WHILE_PAUSED = (11, "no initiate between PAUSE/UPLOAD_ALL and RESUME")
    RESUME_TOO_EARLY = (12, "RESUME only after the UPLOAD_ALL terminations completed")
    RETRIEVE_NOT_TCP = (13, "retrieve names exactly one offloaded TCP connection, never a path or neighbor")
    RETRIEVE_HALF_CLOSED = (13, "retrieve is forbidden in FIN_WAIT1, FIN_WAIT2 and CLOSE_WAIT")
    BAD_REASON = (14, "retrieve reason must be a TCP_UPLOAD_REASON (1..11)")
    BAD_EVENT = (15, "event type must be one of the four TCP_OFFLOAD_EVENT_TYPE values")
    IO_AFTER_ABORT = (16, "after Abort, outstanding sends and disconnects complete with REQUEST_ABORTED")
    INDICATION_DURING_INITIATE = (30, "no indication on a connection before its initiate completed")
    PAUSED_STATUS_USED = (20, "I/O during an upload completes with UPLOAD_IN_PROGRESS, never PAUSED")
    SEND_COMPLETED_TWICE = (22, "every send NBL is completed exactly once or returned exactly once")
    SEND_PREFIX = (21, "ACKed send bytes form a prefix; the rest is returned in order")
    DELEGATED_SEQUENCE = (21, "delegated state must satisfy SndUna <= SndNxt <= SndMax")
    RECEIVE_CONSERVATION = (23, "each received byte reaches the host exactly once, in order")
    RECEIVE_FIFO = (24, "posted receives are completed FIFO")
    TERMINATE_NEVER_COMPLETED = (3, "every operation completes")
    DELEGATED_NOT_RETURNED = (27, "a successful terminate returns current delegated values")
    TIMER_ENCODING = (28, "stopped timers are reported as TimeoutDelta = 0xFFFFFFFF")
    UNKNOWN_HANDLE = (0, "a call names an object that is not offloaded to that target")
    COMPLETION_WITHOUT_REQUEST = (0, "a completion names a request that was not outstanding")
    # Added by the mediator (additive): rules the section 8 list implies but the first list did not name.
    NEVER_COMPLETED = (3, "every state operation completes")
    NOT_OFFLOADABLE = (0, "a TCP connection is offloaded only in ESTABLISHED..LAST_ACK (reference 1.5)")
    DUPLICATE_HANDLE = (7, "a new offload names an object that is already offloaded")
    TREE_IN_USE = (2, "a block tree belongs to the target until its completion")
    OP_AFTER_TERMINATE = (9, "no update, query or invalidate on an object whose terminate was called")
    CAPS_NOT_REQUERIED = (11, "after RESUME the host re-queries OID_TCP_TASK_OFFLOAD before its next offload")
    UPLOAD_ALL_NOT_DONE = (11, "after UPLOAD_ALL the host terminates every object on that target")
    SEND_CONSERVATION = (21, "bytes posted = bytes ACKed (SndUna advance) + bytes handed back")
    IO_NOT_COMPLETED = (22, "every request on a connection is completed (or returned) before its terminate completes")
    INDICATION_AT_TERMINATE = (30, "every indication on a connection has returned before its terminate completes")

    @property
    def invariant(self) -> int:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]


class ContractViolation(Exception):
    """A target or the host broke a chimney rule.  ``rule`` names it; ``party`` says who ("target:<name>"/"host")."""

    def __init__(self, rule: Rule, detail: str, *, party: str = "", handle: object = None) -> None:
        self.rule = rule
        self.detail = detail
        self.party = party
        self.handle = handle
        where = f" [{party}]" if party else ""
        super().__init__(f"{rule.name} (invariant {rule.invariant}: {rule.text}){where}: {detail}")

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule.name, "invariant": self.rule.invariant, "party": self.party, "detail": self.detail}
