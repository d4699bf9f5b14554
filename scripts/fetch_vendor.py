#!/usr/bin/env python3
"""Fetch the dashboard's front-end files from the npm registry into static/vendor/.

    python scripts/fetch_vendor.py            # newest 2.x of each package
    python scripts/fetch_vendor.py --check    # say what would change, write nothing

Each file carries its version in its name (htmx-2.0.11.min.js); `static/vendor/manifest.json`
maps a logical name to the file, and the templates read it, so an upgrade is this one command.
Tarballs are checked against the registry's sha512 integrity before anything is written.
Uses only the standard library (no npm needed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR_DIR = Path(__file__).resolve().parent.parent / "static" / "vendor"
TIMEOUT_S = 30


@dataclass(frozen=True)
class Asset:
    key: str  # the name templates use
    package: str
    major: int
    member: str  # path inside the tarball
    filename: str  # with {version}


ASSETS = (
    Asset("htmx", "htmx.org", 2, "package/dist/htmx.min.js", "htmx-{version}.min.js"),
    Asset("htmx_ws", "htmx-ext-ws", 2, "package/dist/ws.js", "htmx-ext-ws-{version}.js"),
)


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "neutrino-fetch"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return bytes(response.read())


def _newest(versions: dict[str, dict], major: int) -> str:
    stable = [v for v in versions if re.fullmatch(rf"{major}\.\d+\.\d+", v)]
    if not stable:
        raise SystemExit(f"no stable {major}.x release found")
    return max(stable, key=lambda v: tuple(int(part) for part in v.split(".")))


def _check_integrity(data: bytes, integrity: str, name: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"{name}: unexpected integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{name}: tarball does not match the registry's sha512 integrity")


def fetch(asset: Asset) -> tuple[str, bytes]:
    """The asset's file name and content, from the newest stable release of its major version."""
    meta = json.loads(_get(f"{REGISTRY}/{asset.package}"))
    version = _newest(meta["versions"], asset.major)
    dist = meta["versions"][version]["dist"]
    tarball = _get(dist["tarball"])
    _check_integrity(tarball, dist["integrity"], f"{asset.package}@{version}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(asset.member)
        if member is None:
            raise SystemExit(f"{asset.package}@{version} has no {asset.member}")
        return asset.filename.format(version=version), member.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report only, write nothing")
    args = parser.parse_args(argv)
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    manifest_path = VENDOR_DIR / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest: dict[str, str] = {}
    for asset in ASSETS:
        filename, content = fetch(asset)
        manifest[asset.key] = f"vendor/{filename}"
        target = VENDOR_DIR / filename
        state = "unchanged" if target.exists() and target.read_bytes() == content else "new"
        print(f"{asset.package}: {filename} ({len(content):,} bytes, {state})")
        if args.check:
            continue
        target.write_bytes(content)
        previous = old.get(asset.key)
        if previous and previous != manifest[asset.key]:
            (VENDOR_DIR.parent / previous).unlink(missing_ok=True)
            print(f"  removed {previous}")
    if not args.check:
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
