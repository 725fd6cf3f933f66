"""Wire models of the incoming-report endpoints (the rua endpoint and its read API)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from app.inbound.messages import Handled, MessageOutcome
from app.inbound.service import Receipt, SenderDay


class ReportWarning(BaseModel):
    """Something of a received report that was read leniently (stored, flagged)."""

    field: str | None = Field(description="The JSON path, e.g. `policies[0].policy.policy-type`.")
    reason: str = Field(description="What is wrong, and what was stored instead.")


class ReportAccepted(BaseModel):
    id: int = Field(description="The stored report's id in the read API.")
    duplicate: bool = Field(
        description="True when this (organization, report-id) was already stored: "
        "acknowledged, stored once."
    )
    organization_name: str
    report_id: str
    policies: int
    dkim: str | None = Field(
        None, description="DKIM verdict of a mail: pass, fail, none or temperror."
    )
    dkim_domain: str | None = None
    warnings: list[ReportWarning] = Field(
        default_factory=list,
        description="What was read leniently: a missing `contact-info`, a malformed field "
        "stored as absent, a policy or failure detail left uncounted, an unknown result "
        "type or key kept as written. The report is stored; its JSON keeps everything.",
    )

    @classmethod
    def of(cls, receipt: Receipt) -> ReportAccepted:
        return cls(
            id=receipt.report_pk,
            duplicate=receipt.duplicate,
            organization_name=receipt.report.organization_name,
            report_id=receipt.report.report_id,
            policies=len(receipt.report.policies),
            dkim=receipt.dkim.verdict.value if receipt.dkim else None,
            dkim_domain=receipt.dkim.domain if receipt.dkim else None,
            warnings=[
                ReportWarning(field=w.path or None, reason=w.reason)
                for w in receipt.report.warnings
            ],
        )


MailOutcome = Literal["bounce_recorded", "bounce_dropped", "auto_reply_ignored"]
_MAIL_OUTCOMES: dict[Handled, MailOutcome] = {
    Handled.BOUNCE_RECORDED: "bounce_recorded",
    Handled.BOUNCE_DROPPED: "bounce_dropped",
    Handled.AUTO_REPLY: "auto_reply_ignored",
}


class MailHandled(BaseModel):
    """A mail that was not a report: a bounce of our report mail, or an auto-reply."""

    outcome: MailOutcome = Field(
        description="`bounce_recorded`: a DSN (RFC 3464) about one of our deliveries, added "
        "to its attempts; `bounce_dropped`: a DSN naming no delivery known here, logged and "
        "dropped; `auto_reply_ignored`: an out-of-office or other auto-reply (RFC 3834)."
    )
    delivery_id: int | None = Field(default=None, description="The delivery the DSN is about.")
    attempt_outcome: Literal["bounced", "delayed"] | None = Field(
        default=None,
        description="What was recorded: `bounced` (permanent, 5.x.x), `delayed` (temporary); "
        "null when nothing was (the DSN reports no failure, or was dropped).",
    )
    status: str | None = Field(default=None, description="The DSN's Status, e.g. `5.1.1`.")
    suppressed: bool = Field(
        default=False,
        description="True when this bounce got the rua suppressed (TLSRPT_BOUNCES__*).",
    )

    @classmethod
    def of(cls, outcome: MessageOutcome) -> MailHandled:
        bounce = outcome.bounce
        if bounce is None:
            return cls(outcome=_MAIL_OUTCOMES[outcome.handled])
        return cls(
            outcome=_MAIL_OUTCOMES[outcome.handled],
            delivery_id=bounce.delivery_id,
            attempt_outcome=bounce.outcome,
            status=bounce.status.status if bounce.status else None,
            suppressed=bounce.suppressed,
        )


class InboundReport(BaseModel):
    id: int
    organization_name: str
    report_id: str
    contact_info: str | None = Field(description="Null when the sender gave none.")
    start_at: dt.datetime
    end_at: dt.datetime
    day: dt.date
    policy_domains: list[str]
    policy_count: int
    success_count: int
    failure_count: int
    has_failures: bool
    received_via: str
    received_at: dt.datetime
    times_received: int
    last_received_at: dt.datetime
    mail_from: str | None = None
    mail_subject: str | None = None
    mail_message_id: str | None = None
    mail_report_domain: str | None = None
    mail_submitter: str | None = None
    mail_filename: str | None = None
    dkim_verdict: str | None = None
    dkim_domain: str | None = None
    dkim_reason: str | None = None
    warnings: list[ReportWarning] | None = Field(
        None, description="What was read leniently when the report was stored; null: nothing."
    )

    @field_validator("success_count", "failure_count", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        return int(value) if isinstance(value, Decimal) else value


class InboundReportList(BaseModel):
    reports: list[InboundReport]
    next_before: int | None = Field(
        None, description="Pass as `before` for the next (older) page; null on the last page."
    )


class InboundReportDetail(InboundReport):
    report: dict[str, Any] = Field(description="The report JSON exactly as the sender sent it.")


class MxHostSummary(BaseModel):
    mx_host: str | None = Field(description="`receiving-mx-hostname`; null when not reported.")
    receiving_ips: list[str]
    failed_sessions: int
    result_types: list[str]


class SenderDaySummary(BaseModel):
    day: dt.date
    organization: str
    reports: int
    successful_sessions: int
    failed_sessions: int
    failure_types: dict[str, int] = Field(description="Failed sessions per `result-type`.")
    mx_hosts: list[MxHostSummary]
    sending_ips: list[str]

    @classmethod
    def of(cls, entry: SenderDay) -> SenderDaySummary:
        return cls(
            day=entry.day,
            organization=entry.organization,
            reports=entry.reports,
            successful_sessions=entry.successful_sessions,
            failed_sessions=entry.failed_sessions,
            failure_types=entry.failure_types,
            mx_hosts=[
                MxHostSummary(
                    mx_host=mx.mx_host,
                    receiving_ips=sorted(mx.receiving_ips),
                    failed_sessions=mx.failed_sessions,
                    result_types=sorted(mx.result_types),
                )
                for mx in entry.mx_by_failures()
            ],
            sending_ips=sorted(entry.sending_ips),
        )


class InboundSummary(BaseModel):
    domain: str
    from_day: dt.date = Field(alias="from")
    to_day: dt.date = Field(alias="to")
    days: list[SenderDaySummary]

    model_config = {"populate_by_name": True}
