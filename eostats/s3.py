"""Object storage (S3) support: where Snakemake's default storage puts a workflow path, and GDAL's S3 settings.

With ``--default-storage-provider s3 --default-storage-prefix s3://bucket/run``, Snakemake maps every relative
workflow path ``results/x`` to the object ``s3://bucket/run/results/x`` and hands a job a *local copy* of it at
``<local storage prefix>/s3/bucket/run/results/x``. Jobs therefore write under a different root than the config's
paths say (:func:`relocated_run`), and hrefs a job records must name the stored object, not the local copy that
disappears with the job (:func:`hrefs_to_storage`).

Credentials are never handled here: boto3, Snakemake's S3 plugin and GDAL all read the standard AWS chain
(environment, ``~/.aws``, instance or service-account role).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eostats.workflow import Run


def storage_url(path: str | Path, prefix: str) -> str:
    """The object a relative workflow ``path`` becomes under the default storage ``prefix`` (as Snakemake forms it)."""
    return f"{prefix.rstrip('/')}/{posixpath.normpath(str(path))}"


def storage_root(declared: str | Path, local: str | Path) -> Path:
    """The directory a job's local copies live under: ``local`` is where Snakemake put the workflow path ``declared``.

    Raises ``ValueError`` when ``local`` does not end with ``declared``.
    """
    declared_parts = Path(os.path.normpath(declared)).parts
    local_path = Path(os.path.normpath(local))
    if Path(*local_path.parts[-len(declared_parts) :]) != Path(*declared_parts):
        raise ValueError(f"{local} is not a copy of the workflow path {declared}")
    return (
        Path(*local_path.parts[: -len(declared_parts)])
        if len(local_path.parts) > len(declared_parts)
        else Path()
    )


def relocated_run(run: Run, declared: str | Path, local: str | Path) -> Run:
    """``run`` with its relative output paths moved to where the job's files really are.

    ``declared`` is a path the run names (e.g. ``run.tile_dir(task)``) and ``local`` the path Snakemake gave the job
    for it; without default storage they are equal and ``run`` comes back unchanged. Absolute paths and URLs in the
    config stay as they are.
    """
    root = storage_root(declared, local)
    if root == Path():
        return run
    config: dict[str, Any] = dict(run.config)
    if not Path(config["results"]).is_absolute():
        config["results"] = str(root / config["results"])
    location = str(config["output_location"])
    if (
        not location.startswith("{results}")
        and "://" not in location
        and not Path(location).is_absolute()
    ):
        config["output_location"] = str(root / location)
    return Run(config)


def hrefs_to_storage(
    item: MutableMapping[str, Any], local_dir: str | Path, url: str
) -> MutableMapping[str, Any]:
    """Point the asset and link hrefs of ``item`` that lie inside ``local_dir`` at the same files under ``url``.

    ``local_dir`` is a job's local copy of the stored directory ``url`` (e.g. ``s3://bucket/run/results/sample``).
    Other hrefs are left alone. The item is changed in place and returned.
    """
    local_root = os.path.abspath(local_dir)
    base = url.rstrip("/")

    def convert(href: str) -> str:
        path = href[len("file://") :] if href.startswith("file://") else href
        if "://" in path or not os.path.isabs(path):
            return href
        path = os.path.normpath(path)
        if path != local_root and not path.startswith(local_root + os.sep):
            return href
        return base + "/" + Path(os.path.relpath(path, local_root)).as_posix()

    for asset in (item.get("assets") or {}).values():
        if "href" in asset:
            asset["href"] = convert(asset["href"])
    for link in item.get("links") or []:
        if "href" in link:
            link["href"] = convert(link["href"])
    return item


def item_with_stored_assets(item_path: str | Path, item_url: str) -> dict[str, Any]:
    """The STAC item at ``item_path`` (a local copy of the object ``item_url``) with its relative asset hrefs made
    absolute URLs next to ``item_url``, so that readers open the stored COGs (GDAL reads ``s3://`` as /vsis3/)."""
    doc = json.loads(Path(item_path).read_text())
    base = item_url.rsplit("/", 1)[0]
    for asset in (doc.get("assets") or {}).values():
        href = asset.get("href", "")
        if href and "://" not in href and not href.startswith("/"):
            asset["href"] = f"{base}/{posixpath.normpath(href)}"
    return doc


def point_self_link(item_path: str | Path, url: str) -> None:
    """Make the ``self`` link of the STAC item file at ``item_path`` the URL it is stored under (it was written
    naming the job's local copy). Other links and the assets (relative hrefs) are left as they are."""
    from eostats.fileio import write_json_atomic

    doc = json.loads(Path(item_path).read_text())
    for link in doc.get("links") or []:
        if link.get("rel") == "self":
            link["href"] = url
    write_json_atomic(item_path, doc)


def upload_files(local_dir: str | Path, url: str, *, skip: Iterable[str] = ()) -> list[str]:
    """Upload the files under ``local_dir`` to ``url`` (``s3://bucket/prefix``), keeping relative paths.

    Names in ``skip`` (relative paths) and hidden files are left out. boto3 takes credentials, region and endpoint
    (``AWS_ENDPOINT_URL_S3``) from the standard AWS chain. Returns the URLs written, in upload order.
    """
    import boto3  # imported late: only object-storage runs need it
    from botocore.config import Config

    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URL: {url}")
    prefix = parsed.path.strip("/")
    # only the checksums S3 requires: S3-compatible servers reject or mangle the newer default ones
    client = boto3.client(
        "s3",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )
    skipped = set(skip)
    root = Path(local_dir)
    written = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative in skipped or any(part.startswith(".") for part in Path(relative).parts):
            continue
        key = f"{prefix}/{relative}" if prefix else relative
        client.upload_file(str(path), parsed.netloc, key)
        written.append(f"s3://{parsed.netloc}/{key}")
    return written


def gdal_s3_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL's ``/vsis3/`` settings for a non-AWS endpoint, from the AWS SDKs' ``AWS_ENDPOINT_URL[_S3]``.

    Returns ``AWS_S3_ENDPOINT`` (host[:port]), ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style, as MinIO
    and most S3-compatible servers need); empty when GDAL's own ``AWS_S3_ENDPOINT`` is set or no endpoint is.
    """
    env = os.environ if environ is None else environ
    if env.get("AWS_S3_ENDPOINT"):
        return {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    if not parsed.netloc:
        raise ValueError(f"cannot read an S3 endpoint from {endpoint!r}")
    return {
        "AWS_S3_ENDPOINT": parsed.netloc,
        "AWS_HTTPS": "NO" if parsed.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": env.get("AWS_VIRTUAL_HOSTING", "FALSE"),
    }


def configure_gdal_s3(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :func:`gdal_s3_options` in the environment (GDAL reads its config there); returns what was set."""
    env = os.environ if environ is None else environ
    options = gdal_s3_options(env)
    for key, value in options.items():
        env.setdefault(key, value)
    return options
