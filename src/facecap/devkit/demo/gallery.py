"""An HTML page of the stored faces with their metadata, grouped by track, written next to the demo's store."""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from .inventory import StoredObject

# The first shot of a track (tracking.firstShot) before its best shots; messages without `shot` last.
_SHOT_ORDER = {"first": 0, "best": 1}


def by_track(faces: list[StoredObject]) -> list[tuple[str, list[StoredObject]]]:
    """The faces grouped by track id, tracks in order of their first capture, each track's faces first
    shot first, then by capture time. A face without a track id is a group of its own."""
    groups: dict[str, list[StoredObject]] = {}
    for face in sorted(faces, key=lambda f: f.key):  # keys start with the capture time
        groups.setdefault(face.metadata.get("track-id") or f"untracked:{face.key}", []).append(face)
    for members in groups.values():
        members.sort(key=lambda f: (_SHOT_ORDER.get(f.metadata.get("shot", ""), 2), f.key))
    return sorted(groups.items(), key=lambda item: min(f.key for f in item[1]))


def _card(face: StoredObject, name: str) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in sorted(face.metadata.items()) if k != "sha256"
    )
    shot = face.metadata.get("shot", "")
    badge = f'<p class="shot">{html.escape(shot)} shot</p>' if shot else ""
    return (f'<figure><img src="images/{html.escape(name)}" alt="face {html.escape(face.face_id)}">'
            f"<figcaption>{badge}<code>{html.escape(face.key)}</code><table>{rows}</table></figcaption></figure>")


def write_gallery(folder: Path, faces: list[StoredObject], read_body: Callable[[str], bytes],
                  title: str = "facecap — stored faces", summary: dict[str, str] | None = None) -> Path:
    """Copy each face image into `folder`/images and write `folder`/index.html, one row per track.
    Returns the page."""
    images = folder / "images"
    shutil.rmtree(images, ignore_errors=True)  # an earlier gallery's images; the page lists only these faces
    images.mkdir(parents=True)
    sections = []
    number = 0
    for track, members in by_track(faces):
        cards = []
        for face in members:
            number += 1
            name = f"{number:05d}_{Path(face.key).name}"
            (images / name).write_bytes(read_body(face.key))
            cards.append(_card(face, name))
        heading = "no track" if track.startswith("untracked:") else f"track {track}"
        sections.append(f'<section><h2>{html.escape(heading)} ({len(members)})</h2>'
                        f'<div class="grid">{"".join(cards)}</div></section>')
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (summary or {}).items())
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; padding: .5rem; border: 1px solid #ccc; border-radius: 6px; width: 260px; }}
img {{ width: 100%; height: auto; background: #eee; }}
table {{ font-size: 12px; border-collapse: collapse; }}
th {{ text-align: left; padding-right: .5rem; color: #555; }}
code {{ font-size: 11px; word-break: break-all; }}
h2 {{ font-size: 1rem; margin: 1.2rem 0 .4rem; }}
.shot {{ margin: .2rem 0; font-weight: bold; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(faces)} face(s) of {len(sections)} track(s), written {written}.</p><ul>{facts}</ul>
{"".join(sections)}
</body></html>
"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
