"""The naive baseline the daemon is measured against: what a nightly
"re-list everything and diff" integration does (PortSIP's and 3CX's style).

    python -m bench.baseline --graph URL --token T --pbx URL --pbx-token T [--start 1001] [--photos]

Each cycle: list every user from Graph (``GET /users?$top=999``), list every
user on the PBX, diff by externalId, then write one request per object:
POST new users (numbered after the highest number it finds), PATCH the ones
that differ, and disable the ones no longer wanted. It keeps no state.
It uses the daemon's own payload mapping so both write the same objects.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from typing import Any

import aiohttp

from daemon.pbx.mapping import managed_view, patch_operations, photo_data_uri, user_payload
from daemon.pbx.schema import PATCH_OP, PBX_USER, SCIM_JSON

SELECT = ("displayName,givenName,surname,userPrincipalName,mail,jobTitle,department,businessPhones,"
          "mobilePhone,accountEnabled,userType")


async def graph_users(session: aiohttp.ClientSession, base: str, token: str) -> list[dict[str, Any]]:
    url: str | None = f"{base}/v1.0/users?$select={SELECT}&$top=999"
    users: list[dict[str, Any]] = []
    while url:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            body = await response.json()
        users += body["value"]
        url = body.get("@odata.nextLink")
    return users


async def photos(session: aiohttp.ClientSession, base: str, token: str, ids: list[str]) -> dict[str, str]:
    """Every wanted user's photo, every cycle ($batch of 20)."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), 20):
        requests = [{"id": i, "method": "GET", "url": f"/users/{i}/photos/96x96/$value"} for i in ids[start : start + 20]]
        async with session.post(f"{base}/v1.0/$batch", json={"requests": requests},
                                headers={"Authorization": f"Bearer {token}"}) as response:
            body = await response.json()
        for item in body.get("responses", []):
            if item.get("status") == 200 and isinstance(item.get("body"), str):
                found[item["id"]] = photo_data_uri(base64.b64decode(item["body"]))
    return found


async def pbx_users(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    users: dict[str, dict[str, Any]] = {}
    start = 1
    while True:
        async with session.get(f"{base}/Users", params={"startIndex": str(start), "count": "1000"},
                               headers=headers) as response:
            body = await response.json()
        resources = body.get("Resources") or []
        for resource in resources:
            if resource.get("externalId"):
                users[resource["externalId"]] = resource
        start += len(resources)
        if not resources or start > int(body.get("totalResults") or 0):
            return users


async def cycle(args: argparse.Namespace) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {args.pbx_token}", "Content-Type": SCIM_JSON}
    counts = {"create": 0, "update": 0, "disable": 0}
    async with aiohttp.ClientSession() as session:
        wanted = sorted((u for u in await graph_users(session, args.graph, args.token)
                         if u.get("accountEnabled") and u.get("userType") == "Member"),
                        key=lambda u: str(u.get("userPrincipalName", "")).lower())
        pictures = await photos(session, args.graph, args.token, [u["id"] for u in wanted]) if args.photos else {}
        existing = await pbx_users(session, args.pbx, headers)
        numbers = [int(u.get(PBX_USER, {}).get("extensionNumber", 0)) for u in existing.values()]
        next_number = max([args.start - 1, *numbers]) + 1
        for user in wanted:
            current = existing.pop(user["id"], None)
            number = current.get(PBX_USER, {}).get("extensionNumber") if current else str(next_number)
            desired = user_payload(user, extension_number=str(number), active=True, sign_in_as_administrator=False,
                                   sign_in_as_standard_user=False, photo=pictures.get(user["id"]))
            if current is None:
                next_number += 1
                async with session.post(f"{args.pbx}/Users", json=desired, headers=headers) as response:
                    await response.read()
                counts["create"] += 1
                continue
            operations = patch_operations(managed_view(current, desired), desired)
            if operations:
                body = {"schemas": [PATCH_OP], "Operations": operations}
                async with session.patch(f"{args.pbx}/Users/{current['id']}", json=body, headers=headers) as response:
                    await response.read()
                counts["update"] += 1
        for gone in existing.values():  # on the PBX, no longer wanted
            if gone.get("active", True):
                body = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": False}]}
                async with session.patch(f"{args.pbx}/Users/{gone['id']}", json=body, headers=headers) as response:
                    await response.read()
                counts["disable"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--graph", required=True, help="Graph base URL (without /v1.0)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--pbx", required=True, help="the PBX's SCIM base URL")
    parser.add_argument("--pbx-token", required=True)
    parser.add_argument("--start", type=int, default=1001)
    parser.add_argument("--photos", action="store_true")
    print(asyncio.run(cycle(parser.parse_args())))


if __name__ == "__main__":
    main()
