"""Launch buttons that open the source notebooks.

The book's chapters are the executed copies in ``build/notebooks/`` (see ``_toc.yml``), which
are not in the repository; Jupyter Book 1 builds each launch link from the page's own path, so
Binder, Colab and JupyterHub would be sent to ``build/notebooks/NN_*.ipynb``. This extension
points the links at ``notebooks/NN_*.ipynb``, the same notebook as committed (no outputs).

Enabled in ``_config.yml``::

    sphinx:
      local_extensions:
        launch_source: book/_ext
"""

EXECUTED = "build/notebooks/"
SOURCE = "notebooks/"


def source_links(app, pagename, templatename, context, doctree):
    """Rewrite the launch links of an executed chapter (``html-page-context``, after the theme's)."""
    if not pagename.startswith(EXECUTED):
        return
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if "url" in button:
                button["url"] = button["url"].replace(EXECUTED, SOURCE)


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; run after it
    app.connect("html-page-context", source_links, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
