"""Authority and Graph hosts per national cloud, with the config's overrides."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import TenantConfig

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


CLOUDS = {
    "GLOBAL": Cloud("login.microsoftonline.com", "graph.microsoft.com"),
    "CHINA": Cloud("login.chinacloudapi.cn", "microsoftgraph.chinacloudapi.cn", contacts_delta=False,
                   contacts_listing_seconds=CHINA_CONTACTS_LISTING_SECONDS),
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
