"""One module per benchmark section; each has section_<name>(ctx) -> list[Row]."""
