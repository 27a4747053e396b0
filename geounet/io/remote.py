"""Cloud-native inputs: local files, COG URLs, object-store URIs and STAC Items alike.

Every image input of geounet goes through :func:`gdal_path`, which turns what the user typed
into a name GDAL opens without downloading the file:

- a local path stays a :class:`~pathlib.Path`;
- ``http(s)://host/scene.tif`` becomes ``/vsicurl/http(s)://host/scene.tif``;
- ``s3://bucket/key``, ``gs://bucket/key`` and ``az://container/key`` become ``/vsis3/``,
  ``/vsigs/`` and ``/vsiaz/`` names; GDAL reads the credentials from the usual environment
  variables (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_REGION`` or
  ``AWS_NO_SIGN_REQUEST=YES``, ``GOOGLE_APPLICATION_CREDENTIALS``,
  ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT``/``AZURE_STORAGE_ACCESS_KEY``);
- a STAC Item (a local ``.json`` file or a URL of one) becomes its asset ``asset`` (parsed with
  :mod:`json`; relative ``href`` values are resolved against the Item's location).

GDAL's virtual file systems read windows with HTTP range requests, so classifying part of a
remote Cloud-Optimized GeoTIFF transfers only the blocks it needs. Remote names are kept as
:class:`RemotePath` (a ``str`` that also answers ``name``, ``stem`` and ``suffix``), since
:class:`~pathlib.Path` would fold the ``//`` of a URL. Outputs stay local
(:func:`check_local_output`).

Example:
    >>> gdal_path("s3://bucket/scenes/a.tif")
    '/vsis3/bucket/scenes/a.tif'
    >>> gdal_path("https://example.com/cog.tif").name
    'cog.tif'
    >>> is_remote("scene.tif")
    False
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from geounet.core.errors import InputNotFoundError, InvalidParameterError, InvalidRasterError
from geounet.core.types import PathLike

__all__ = [
    "REMOTE_GDAL_OPTIONS",
    "SCHEMES",
    "RemotePath",
    "check_local_output",
    "gdal_path",
    "is_remote",
    "stac_asset_href",
]

#: URI scheme -> GDAL virtual file system prefix.
SCHEMES: dict[str, str] = {
    "http": "/vsicurl/http://",
    "https": "/vsicurl/https://",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
#: GDAL settings for remote reads (set unless the user set them): no directory listing on
#: open (one request saved per file, no sidecar probing) and a merge of adjacent ranges.
REMOTE_GDAL_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
_STAC_TIMEOUT_S = 60


class RemotePath(str):
    """A GDAL virtual file name (``/vsicurl/...``, ``/vsis3/...``) with the Path bits geounet uses.

    It is a ``str``, so rasterio and GDAL open it as is; ``name``, ``stem`` and ``suffix``
    describe the object at its end (a query string is left out).

    Example:
        >>> p = RemotePath("/vsicurl/https://host/a/scene.tif?sig=1")
        >>> p.name, p.stem, p.suffix
        ('scene.tif', 'scene', '.tif')
    """

    @property
    def name(self) -> str:
        """The last part of the name, without a query string."""
        return self.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        """:attr:`name` without its suffix."""
        return Path(self.name).stem

    @property
    def suffix(self) -> str:
        """The suffix of :attr:`name` (``".tif"``)."""
        return Path(self.name).suffix

    def exists(self) -> bool:
        """True: a remote object is checked when GDAL opens it."""
        return True

    def is_dir(self) -> bool:
        """False: a remote raster is an object, not a folder."""
        return False

    def resolve(self) -> RemotePath:
        """Itself (already absolute)."""
        return self


def _scheme(text: str) -> str:
    head = text.split("://", 1)[0].lower() if "://" in text else ""
    return head if head in SCHEMES else ""


def is_remote(source: PathLike) -> bool:
    """Whether ``source`` is a URL, an object-store URI or a ``/vsi`` remote name."""
    text = os.fspath(source)
    return bool(_scheme(text)) or text.startswith(
        ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/")
    )


def _to_vsi(text: str) -> RemotePath:
    scheme = _scheme(text)
    if not scheme:
        return RemotePath(text)
    rest = text.split("://", 1)[1]
    for key, value in REMOTE_GDAL_OPTIONS.items():
        os.environ.setdefault(key, value)  # read by GDAL at each open, workers included
    return RemotePath(SCHEMES[scheme] + rest)


def _looks_like_stac(text: str) -> bool:
    base = text.split("?", 1)[0].lower()
    return base.endswith(".json") or base.endswith(".geojson")


def _load_item(text: str) -> dict[str, Any]:
    try:
        if _scheme(text) in ("http", "https"):
            with urllib.request.urlopen(text, timeout=_STAC_TIMEOUT_S) as resp:
                raw = resp.read()
        elif _scheme(text):
            raise InvalidParameterError(
                f"{text}: STAC Items are read over http(s) or from a local file; give the "
                "Item's https:// URL or download the JSON file."
            )
        else:
            raw = Path(text).read_bytes()
        item = json.loads(raw)
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"{text}: no such STAC Item file; check the path.") from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, InvalidParameterError):
            raise
        raise InvalidRasterError(
            f"{text}: could not read it as a STAC Item JSON ({exc}); give a STAC Item "
            "(a GeoJSON Feature with 'assets') or the URL of a GeoTIFF."
        ) from exc
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict):
        raise InvalidRasterError(
            f"{text}: not a STAC Item (no 'assets' object); give a STAC Item JSON "
            "(type Feature, with assets) or the URL of a GeoTIFF."
        )
    return item


def _pick_asset(text: str, assets: dict[str, Any], asset: str | None) -> dict[str, Any]:
    tiffs = [k for k, v in assets.items() if "image/tiff" in str(v.get("type", ""))]
    candidates = tiffs or list(assets)
    if asset is None and len(candidates) == 1:
        asset = candidates[0]
    if asset is None or asset not in assets or "href" not in assets[asset]:
        what = "no asset key was given" if asset is None else f"it has no asset {asset!r}"
        raise InvalidParameterError(
            f"{text}: STAC Item, but {what}; its assets are: "
            f"{', '.join(sorted(assets))}. Pass asset=KEY (--asset KEY), e.g. --asset visual."
        )
    return assets[asset]


def stac_asset_href(item: PathLike, asset: str | None = None) -> str:
    """The absolute location of an asset of a STAC Item.

    Args:
        item: A STAC Item JSON file or its http(s) URL.
        asset: The asset key (e.g. ``"visual"``); may be left out when the Item has a single
            asset.

    Returns:
        The asset's ``href``, made absolute against the Item's location (a URL or a path).

    Raises:
        InputNotFoundError: The Item file does not exist.
        InvalidRasterError: It is not a STAC Item.
        InvalidParameterError: The asset is missing or ambiguous (the allowed keys are named).
    """
    text = os.fspath(item)
    href = str(_pick_asset(text, _load_item(text)["assets"], asset)["href"])
    if _scheme(href) or href.startswith("/"):
        return href
    if _scheme(text):
        return urllib.parse.urljoin(text, href)
    return str((Path(text).parent / href).resolve())


def gdal_path(source: PathLike, asset: str | None = None) -> Path | RemotePath:
    """The name GDAL opens for an image input (local, URL, object store or STAC Item).

    Args:
        source: A local path, an ``http(s)://`` URL, an ``s3://``/``gs://``/``az://`` URI, a
            GDAL ``/vsi...`` name, or a STAC Item (``.json`` file or URL).
        asset: The STAC asset key; only for STAC Items (see :func:`stac_asset_href`).

    Returns:
        A :class:`~pathlib.Path` for a local file, a :class:`RemotePath` otherwise.

    Raises:
        InvalidParameterError: ``asset`` given for an input that is not a STAC Item, or a
            missing/ambiguous asset.
    """
    text = os.fspath(source)
    if _looks_like_stac(text) or (asset is not None and not text.lower().endswith(".tif")):
        return gdal_path(stac_asset_href(text, asset))
    if asset is not None:
        raise InvalidParameterError(
            f"{text}: asset={asset!r} is only for STAC Items (.json); leave it out for an "
            "image, or give the STAC Item."
        )
    if is_remote(text):
        return _to_vsi(text)
    if isinstance(source, RemotePath) or text.startswith("/vsi"):
        return RemotePath(text)
    return Path(source)


def check_local_output(path: PathLike) -> None:
    """Refuse a remote output: results are written to a local (or mounted) file system.

    Raises:
        InvalidParameterError: ``path`` is a URL, an object-store URI or a ``/vsi`` name.
    """
    if is_remote(path):
        raise InvalidParameterError(
            f"{os.fspath(path)}: outputs are written to a local path, not to a URL or object "
            "store; give a local file (e.g. out.tif) and upload it afterwards (aws s3 cp, "
            "gsutil cp, azcopy)."
        )
