"""The database kit: engines, exact column types, the unit of work, migrations."""
