"""Everything that imports Qt or napari: dock widgets, reader, writer, sample data."""
