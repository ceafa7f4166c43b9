"""Static files as production serves them (`make serve`, DEBUG off): minified scripts, names
that carry a hash of the content, and each file also stored compressed (WhiteNoise).

Django's admin ships most of its scripts unminified (core.js, actions.js, urlify.js, ...):
they are minified here, once, as collectstatic copies them, so that the hash, the manifest
and the compressed copies are all of the minified text. Files already minified
(``*.min.js``) are copied as they are.
"""

from __future__ import annotations

from typing import Any

import rjsmin
from django.core.files.base import ContentFile
from whitenoise.storage import CompressedManifestStaticFilesStorage


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
