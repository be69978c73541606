"""The ground floor: errors users can act on, where the project and its targets are, the raw
sources as declared, Markdown, fail points, DuckDB's freed memory.
"""
