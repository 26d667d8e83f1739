"""Authority and Graph hosts per national cloud, with the config's overrides."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import TenantConfig
from daemon.errors import GraphLinkRefused
from daemon.links import same_origin, shown_origin

CHINA_CONTACTS_LISTING_SECONDS = 6 * 3600.0  # a full listing per folder costs pages, not one delta item


@dataclass(frozen=True)
class Cloud:
    authority_host: str
    graph_host: str
    # 21Vianet's service metadata has no delta function on contacts (events have
    # one): personal contacts are read by a full listing, compared with the
    # stored copies, on this slower cadence instead of every run.
    contacts_delta: bool = True
    contacts_listing_seconds: float = 0.0
    # Teams presence (getPresencesByUserId) does not exist in 21Vianet's Graph.
    presence: bool = True


CLOUDS = {
    "GLOBAL": Cloud("login.microsoftonline.com", "graph.microsoft.com"),
    "CHINA": Cloud("login.chinacloudapi.cn", "microsoftgraph.chinacloudapi.cn", contacts_delta=False,
                   contacts_listing_seconds=CHINA_CONTACTS_LISTING_SECONDS, presence=False),
    "USGOV": Cloud("login.microsoftonline.us", "graph.microsoft.us"),
    "USGOV_DOD": Cloud("login.microsoftonline.us", "dod-graph.microsoft.us"),
}


def cloud_of(tenant: TenantConfig) -> Cloud:
    """The tenant's national cloud: its hosts and what its Graph offers."""
    return CLOUDS[tenant.national_cloud]


def graph_base_url(tenant: TenantConfig) -> str:
    """Scheme and host of Graph for this tenant; calls go to ``{base}/v1.0/...``."""
    return tenant.graph_url or f"https://{CLOUDS[tenant.national_cloud].graph_host}"


def authority_url(tenant: TenantConfig) -> str:
    """The single-tenant authority, ``{authority host}/{directory_id}``."""
    base = tenant.authority_url or f"https://{CLOUDS[tenant.national_cloud].authority_host}"
    return f"{base}/{tenant.directory_id}"


def graph_scope(tenant: TenantConfig) -> str:
    """The ``.default`` scope of the tenant's Graph host (application mode)."""
    return f"{graph_base_url(tenant)}/.default"


def graph_link(link: str, base_url: str, what: str) -> str:
    """``link`` when it is on the tenant's Graph host, scheme and port; else
    :class:`GraphLinkRefused`, raised before any request (no token leaves)."""
    if not same_origin(link, base_url):
        raise GraphLinkRefused(
            f"Graph sent a {what} to {shown_origin(link)}, not to {shown_origin(base_url)}; it was not followed",
            hint="check national_cloud and graph_url, and what sits between m365sync and Graph; the next run retries",
        )
    return link
