"""Compressed copies of the static files (router_admin.static_storage): source maps are
served as they are, and a release onto the folder of the one before compresses only what
changed, never keeping a copy of other content or one cut short."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import brotli

from router_admin.static_storage import SKIP_COMPRESS_EXTENSIONS, KeepingCompressor

TEXT = b"body { color: #123456; }\n" * 400


def _compress(path: Path) -> list[str]:
    return KeepingCompressor(extensions=SKIP_COMPRESS_EXTENSIONS, quiet=True).compress(
        str(path))


def _assert_copies_of(path: Path) -> None:
    content = path.read_bytes()
    assert brotli.decompress(path.with_name(path.name + ".br").read_bytes()) == content
    assert gzip.decompress(path.with_name(path.name + ".gz").read_bytes()) == content


def test_collectstatic_compresses_scripts_and_styles_but_not_source_maps(collected_static):
    manifest = json.loads((collected_static / "staticfiles.json").read_text())["paths"]
    maps = [hashed for name, hashed in manifest.items() if name.endswith(".map")]
    assert maps  # the API docs' bundles bring theirs
    for hashed in maps:
        assert not (collected_static / f"{hashed}.br").exists()
        assert not (collected_static / f"{hashed}.gz").exists()
    for name in ("admin/css/base.css", "admin/js/core.js", "portal/portal.css"):
        _assert_copies_of(collected_static / manifest[name])


def test_copies_with_their_files_time_are_kept(tmp_path):
    style = tmp_path / "site.css"
    style.write_bytes(TEXT)
    written = _compress(style)
    assert sorted(written) == [f"{style}.br", f"{style}.gz"]
    _assert_copies_of(style)
    # Copies of the same file with its time are not written again: a marker put in one,
    # time restored, is still there after the next release's compression.
    brotli_copy = Path(f"{style}.br")
    times = os.stat(brotli_copy)
    brotli_copy.write_bytes(b"kept")
    os.utime(brotli_copy, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert sorted(_compress(style)) == sorted(written)
    assert brotli_copy.read_bytes() == b"kept"


def test_a_changed_file_or_a_copy_cut_short_is_compressed_again(tmp_path):
    style = tmp_path / "site.css"
    style.write_bytes(TEXT)
    _compress(style)
    # A run killed while writing the gzip copy leaves it short, with the time it was
    # written at (WhiteNoise sets the file's time once the copy is whole).
    gzip_copy = Path(f"{style}.gz")
    gzip_copy.write_bytes(gzip_copy.read_bytes()[:20])
    _compress(style)
    _assert_copies_of(style)
    # One copy missing: both are written.
    Path(f"{style}.br").unlink()
    _compress(style)
    _assert_copies_of(style)
    # The file rewritten by collectstatic (new content, a later time).
    style.write_bytes(TEXT.replace(b"#123456", b"#abcdef"))
    os.utime(style, ns=(os.stat(style).st_atime_ns, os.stat(style).st_mtime_ns + 10**9))
    _compress(style)
    _assert_copies_of(style)


def test_a_file_compression_does_not_shrink_is_left_without_copies(tmp_path):
    noise = tmp_path / "noise.js"
    noise.write_bytes(os.urandom(4096))
    assert _compress(noise) == []
    assert _compress(noise) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.js"]
