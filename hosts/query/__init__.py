"""Float aggregation queries through the emulated switch (docs/query.md).

The FPISA paper's second application: SUM/COUNT/AVG/MIN/MAX of float
columns, GROUP BY integer/string keys, WHERE filters on the workers; a
group table in the switch's registers; checked against DuckDB.

- :mod:`query.sql`: the query form (a SQL subset parsed by sqlglot)
- :mod:`query.table`: Parquet/CSV via pyarrow, the lineitem generator, partitions
- :mod:`query.partial`: a worker's filter, grouping, partials and group-table layout
- :mod:`query.worker`: a worker's passes through the switch (imports fpisa and hosts.worker only)
- :mod:`query.run`: the orchestrator (the testbed layer: switch + workers)
- :mod:`query.check`, :mod:`query.exact`: DuckDB, correctly rounded sums, bit-exactness
- :mod:`query.cli`: ``fpisa query run`` / ``fpisa query generate``
"""
