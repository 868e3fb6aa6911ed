"""The explorer's panels, one module per screen area."""
