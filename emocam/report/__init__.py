"""Session reports: HTML pages with PNG figures from a recorded session's frame log, its export and an expert's
annotation."""
