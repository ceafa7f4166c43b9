"""Static files as production serves them (`make serve`, DEBUG off): minified scripts, names
that carry a hash of the content, and each file also stored compressed (WhiteNoise).

Django's admin ships most of its scripts unminified (core.js, actions.js, urlify.js, ...):
they are minified here, once, as collectstatic copies them, so that the hash, the manifest
and the compressed copies are all of the minified text. Files already minified
(``*.min.js``) are copied as they are.

Compressing is most of collectstatic's time (Brotli at its best quality over 23 MB, half
of it the API docs' source maps): a release onto the folder of the one before compresses
only the files that changed, and source maps, which only a browser's developer tools
fetch, are served as they are.
"""

from __future__ import annotations

import os
from typing import Any

import rjsmin
from django.core.files.base import ContentFile
from whitenoise.compress import Compressor
from whitenoise.storage import CompressedManifestStaticFilesStorage

# Not compressed: WhiteNoise's list (images, archives, fonts, media) and source maps.
SKIP_COMPRESS_EXTENSIONS = (*Compressor.SKIP_COMPRESS_EXTENSIONS, "map")


def minify_js(source: str) -> str:
    """``source`` without comments and needless whitespace. ``/*! ... */`` comments stay:
    that is where libraries keep their licence."""
    return rjsmin.jsmin(source, keep_bang_comments=True)


def should_minify(name: str) -> bool:
    """A script not minified already: ``x.min.js``, and its hashed copy ``x.min.<hash>.js``,
    are left alone."""
    return name.endswith(".js") and ".min." not in name and not name.endswith("-min.js")


class MinifiedCompressedManifestStorage(CompressedManifestStaticFilesStorage):
    """Every script written unminified is written minified instead: collectstatic's copy
    and the hashed copy, which post_process makes from the app's original file (so the hash
    is of the original, which changes whenever the minified text does). WhiteNoise then
    compresses what was written."""

    def _save(self, name: str, content: Any) -> str:
        if should_minify(name):
            content.seek(0)
            source = content.read()
            text = source.decode("utf-8") if isinstance(source, bytes) else source
            content = ContentFile(minify_js(text).encode("utf-8"))
        return super()._save(name, content)

    def create_compressor(self, **kwargs: Any) -> Compressor:
        if kwargs.get("extensions") is None:  # WHITENOISE_SKIP_COMPRESS_EXTENSIONS unset
            kwargs["extensions"] = SKIP_COMPRESS_EXTENSIONS
        return KeepingCompressor(**kwargs)


class KeepingCompressor(Compressor):
    """Keeps the compressed copies a release before made of the same file.

    WhiteNoise gives each copy its source's modification time once the copy is written
    whole; collectstatic rewrites a changed file (a new time), and a hashed name is its
    content. So copies with their source's time are of this content, and complete: a copy
    cut short by a killed run still carries the time it was written at."""

    def compress(self, path: str) -> list[str]:
        kept = self.current_copies(path)
        return kept if kept is not None else super().compress(path)

    def current_copies(self, path: str) -> list[str] | None:
        """The names of ``path``'s compressed copies if every one WhiteNoise would write is
        there and current; None if it has to compress it."""
        mtime = os.stat(path).st_mtime
        copies = [path + suffix for suffix, used in ((".br", self.use_brotli),
                                                     (".gz", self.use_gzip)) if used]
        for copy in copies:
            try:
                if os.stat(copy).st_mtime != mtime:
                    return None
            except FileNotFoundError:
                return None
        return copies
