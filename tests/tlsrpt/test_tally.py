from datetime import date

from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.tally import Tally

DAY = date(2026, 11, 24)
STS = Policy(
    PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce"), ("mx.example.com",)
)
EXPIRED = FailureDetail(ResultType.CERTIFICATE_EXPIRED, "192.0.2.1", "mx.example.com")


def test_equal_policies_and_details_share_counters() -> None:
    tally = Tally()
    tally.add_session(DAY, STS, None, count=5)
    tally.add_session(
        DAY,
        Policy(STS.policy_type, STS.policy_domain, STS.policy_string, STS.mx_host),
        EXPIRED,
        count=2,
    )
    tally.add_session(
        DAY,
        STS,
        FailureDetail(ResultType.CERTIFICATE_EXPIRED, "192.0.2.1", "mx.example.com"),
        count=3,
    )
    (entry,) = list(tally)
    assert (entry.success_count, entry.failure_count, entry.trigger_count) == (5, 5, 10)
    assert entry.details == {EXPIRED: 5}
    assert tally.sessions == 10


def test_any_difference_separates_policies_and_details() -> None:
    tally = Tally()
    tally.add_session(DAY, STS, EXPIRED)
    tally.add_session(DAY, Policy(PolicyType.STS, "example.com", STS.policy_string, ()), EXPIRED)
    tally.add_session(
        DAY, STS, FailureDetail(ResultType.CERTIFICATE_EXPIRED, "192.0.2.2", "mx.example.com")
    )
    tally.add_session(date(2026, 11, 25), STS, EXPIRED)
    entries = {(e.day, e.policy): e for e in tally}
    assert len(entries) == 3
    assert len(entries[(DAY, STS)].details) == 2


def test_report_delivery_sessions_count_but_do_not_trigger() -> None:
    tally = Tally()
    tally.add_session(DAY, STS, None, count=4, report_delivery=True)
    tally.add_session(DAY, STS, EXPIRED, count=1)
    (entry,) = list(tally)
    assert (entry.success_count, entry.failure_count, entry.trigger_count) == (4, 1, 1)


def test_recipient_domains_are_broken_down() -> None:
    tally = Tally()
    tally.add_session(DAY, STS, None, count=2, recipient_domain="a.example")
    tally.add_session(DAY, STS, EXPIRED, count=1, recipient_domain="a.example")
    tally.add_session(DAY, STS, None, count=1)
    (entry,) = list(tally)
    assert entry.recipients == {"a.example": [2, 1]}


def test_keys_are_stable_and_distinct() -> None:
    assert STS.key == Policy(STS.policy_type, STS.policy_domain, STS.policy_string, STS.mx_host).key
    # Moving a string between the two lists must change the key.
    a = Policy(PolicyType.STS, "d", ("x",), ())
    b = Policy(PolicyType.STS, "d", (), ("x",))
    assert a.key != b.key
    # Absent is not the same as empty.
    assert (
        FailureDetail(ResultType.VALIDATION_FAILURE, None).key
        != FailureDetail(ResultType.VALIDATION_FAILURE, "").key
    )


def test_merge_adds_everything() -> None:
    a, b = Tally(), Tally()
    a.add_session(DAY, STS, EXPIRED, count=2, recipient_domain="r.example")
    b.add_session(DAY, STS, None, count=3, report_delivery=True, recipient_domain="r.example")
    b.add_session(DAY, STS, EXPIRED, count=1)
    a.merge(b)
    (entry,) = list(a)
    assert (entry.success_count, entry.failure_count, entry.trigger_count) == (3, 3, 3)
    assert entry.details == {EXPIRED: 3}
    assert entry.recipients == {"r.example": [3, 2]}
    assert a.sessions == 6
