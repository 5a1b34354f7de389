"""The analysis service behind the REST API: uploads on disk, captures by the runner, results in the cache."""
