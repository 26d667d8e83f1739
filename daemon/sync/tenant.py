"""One sync run of a tenant, in order: read users and groups, find shared
mailboxes, read the PBX inventory once, plan and apply users, then groups,
then contacts, and only then commit the deltaLinks."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.logging import get_logger
from daemon.sync.contacts import ContactSync, Mailbox
from daemon.sync.groups import GroupSync
from daemon.sync.mailboxes import shared_mailboxes
from daemon.sync.users import UserRunReport, UserSync, pbx_inventory

log = get_logger(__name__)


@dataclass
class TenantSync:
    users: UserSync
    groups: GroupSync
    contacts: ContactSync

    async def run(self, report: UserRunReport | None = None) -> UserRunReport:
        """One complete run; never raises for one object's failure.

        ``report`` is filled as writes are applied, so a caller that passes its
        own still has the counts when a later step raises."""
        users = self.users
        tenant = users.tenant
        report = report if report is not None else UserRunReport()
        delta_link = await users.read(report)
        if self.groups.configured:
            await self.groups.read(report.groups)  # before planning users: the INCLUDE scope
        shared: dict[str, str] = {}
        if tenant.shared_mailbox.enabled:
            shared = await shared_mailboxes(tenant, users.sync_store, users.graph, users.now)
        inventory = await pbx_inventory(users.pbx)
        plan = await users.plan_and_apply(report, inventory, shared)
        await self.groups.apply(report.groups, inventory.numbers, inventory.groups)
        report.failures += report.groups.failures
        if self.contacts.enabled:
            await self.contacts.run(await self._mailboxes(shared), report.contacts)
            report.failures += report.contacts.failures
        await users.commit(delta_link)
        await self.groups.commit()
        if plan.held:
            report.result = "deprovisions_held"
            log.warning("deprovisions held by the mass-deletion guard", tenant=tenant.name, held=len(plan.held),
                        threshold=plan.threshold, action=f"m365sync approve --tenant {tenant.name}")
        elif report.failures:
            report.result = "partial"
        return report

    async def _mailboxes(self, shared: dict[str, str]) -> list[Mailbox]:
        """Whose contacts go to the PBX: active synced users, and shared mailboxes."""
        tenant = self.users.tenant
        mailboxes = []
        if tenant.personal_contacts.enabled:
            for graph_id, pbx_id, upn in await self.users.sync_store.active_users(tenant.name):
                if graph_id not in shared:
                    mailboxes.append(Mailbox(graph_id, upn, "personal", pbx_id))
        if tenant.shared_mailbox.enabled:
            mailboxes += [Mailbox(graph_id, upn, "company", None) for graph_id, upn in sorted(shared.items())]
        return mailboxes
