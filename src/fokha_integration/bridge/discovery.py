"""Find MetaTrader 5 data folders (``MQL5/Files``, ``Common/Files``) on Windows and Wine.

A terminal keeps its data under ``%APPDATA%\\MetaQuotes\\Terminal\\<32-hex id>\\``
(``MQL5\\Files`` is the sandbox of its EAs; ``origin.txt`` names the install folder),
and the folder shared by every terminal of the user under
``%APPDATA%\\MetaQuotes\\Terminal\\Common\\Files``. Under Wine the same tree lives in
``<prefix>/drive_c/users/<user>/AppData/Roaming`` (or ``Application Data``). A
portable install (``terminal64.exe /portable``) keeps ``MQL5/Files`` next to the
executable: pass that folder yourself.

Pure path logic over an injectable environment, so it runs (and is tested) anywhere.
It does not start or query a terminal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MT5DataFolder",
    "common_files_folders",
    "find_mt5_data_folders",
    "wine_prefixes",
]

_TERMINAL_ID = re.compile(r"[0-9A-Fa-f]{32}")


@dataclass(frozen=True, slots=True)
class MT5DataFolder:
    """One terminal's data folder.

    ``files_dir`` is its ``MQL5/Files`` (where an EA's ``FileOpen`` without
    ``FILE_COMMON`` works), ``common_files_dir`` the shared ``Common/Files`` of the
    same user (or ``None``), ``install_path`` what ``origin.txt`` says, ``wine_prefix``
    the Wine prefix it was found in (``None`` on Windows).
    """

    terminal_id: str
    data_dir: Path
    files_dir: Path
    common_files_dir: Path | None
    install_path: str | None
    wine_prefix: Path | None


def _read_origin(path: Path) -> str | None:
    try:
        raw = path.read_bytes()[:4096]
    except OSError:
        return None
    # MetaTrader writes origin.txt as UTF-16LE with a byte order mark.
    for encoding in ("utf-16", "utf-8-sig"):
        try:
            text = raw.decode(encoding).strip()
        except UnicodeDecodeError:
            continue
        if text and text.isprintable():
            return text
    return None


def wine_prefixes(*, home: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    """Existing Wine prefixes where MT5 is usually installed.

    ``$WINEPREFIX``, ``~/.wine``, ``~/.mt5`` (the prefix of MetaQuotes' Linux
    installer script) and the prefix of the macOS app
    (``~/Library/Application Support/net.metaquotes.wine.metatrader5``).
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    candidates: list[Path] = []
    if env.get("WINEPREFIX"):
        candidates.append(Path(env["WINEPREFIX"]))
    candidates += [
        home / ".wine",
        home / ".mt5",
        home / "Library" / "Application Support" / "net.metaquotes.wine.metatrader5",
    ]
    seen: list[Path] = []
    for p in candidates:
        if (p / "drive_c").is_dir() and p not in seen:
            seen.append(p)
    return seen


def _appdata_dirs_in_prefix(prefix: Path) -> list[Path]:
    users = prefix / "drive_c" / "users"
    out: list[Path] = []
    try:
        user_dirs = sorted(p for p in users.iterdir() if p.is_dir())
    except OSError:
        return out
    for user in user_dirs:
        for sub in (Path("AppData") / "Roaming", Path("Application Data")):
            if (user / sub / "MetaQuotes").is_dir():
                out.append(user / sub)
    return out


def _terminals_in_appdata(appdata: Path, prefix: Path | None) -> list[MT5DataFolder]:
    base = appdata / "MetaQuotes" / "Terminal"
    common = base / "Common" / "Files"
    common_dir = common if common.is_dir() else None
    found = []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    for data_dir in entries:
        if not _TERMINAL_ID.fullmatch(data_dir.name):
            continue
        files_dir = data_dir / "MQL5" / "Files"
        if not files_dir.is_dir():
            continue
        found.append(
            MT5DataFolder(
                terminal_id=data_dir.name.upper(),
                data_dir=data_dir,
                files_dir=files_dir,
                common_files_dir=common_dir,
                install_path=_read_origin(data_dir / "origin.txt"),
                wine_prefix=prefix,
            )
        )
    return found


def _appdata_roots(
    appdata: Path | None, home: Path | None, env: Mapping[str, str] | None, wine: bool
) -> Iterable[tuple[Path, Path | None]]:
    environ = os.environ if env is None else env
    if appdata is not None:
        yield appdata, None
    elif environ.get("APPDATA"):
        yield Path(environ["APPDATA"]), None
    if wine:
        for prefix in wine_prefixes(home=home, env=environ):
            for roaming in _appdata_dirs_in_prefix(prefix):
                yield roaming, prefix


def find_mt5_data_folders(
    *,
    appdata: Path | None = None,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
    wine: bool = True,
) -> list[MT5DataFolder]:
    """Every MT5 terminal data folder found, Windows (``%APPDATA%``) first, then Wine.

    ``appdata``, ``home`` and ``env`` default to the real ones; tests pass a fake tree.
    """
    found: list[MT5DataFolder] = []
    for root, prefix in _appdata_roots(appdata, home, env, wine):
        found.extend(_terminals_in_appdata(root, prefix))
    return found


def common_files_folders(
    *,
    appdata: Path | None = None,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
    wine: bool = True,
) -> list[Path]:
    """Every existing ``MetaQuotes/Terminal/Common/Files`` folder (``FILE_COMMON``)."""
    out: list[Path] = []
    for root, _ in _appdata_roots(appdata, home, env, wine):
        common = root / "MetaQuotes" / "Terminal" / "Common" / "Files"
        if common.is_dir() and common not in out:
            out.append(common)
    return out
