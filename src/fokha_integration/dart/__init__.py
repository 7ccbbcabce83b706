"""The Dart package generator: models, protocol tables, a WebSocket client and a REST client.

``fokha dart generate OUT_DIR`` (or :func:`generate`) writes a null-safe Dart 3
package for a Flutter app from the same models and tables the Python side uses;
:func:`check` runs the syntax and structure gates on a generated tree
(tree-sitter-dart; there is no Dart SDK on our machines). Needs the ``[dart]``
extra (Jinja2 and tree-sitter-dart).
"""

from __future__ import annotations

from ._generate import DEFAULT_MODELS, generate, render

__all__ = ["DEFAULT_MODELS", "generate", "render"]
