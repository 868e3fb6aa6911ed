"""Built-in Textual themes (one file per theme)."""
