"""Open, serverless Azure Batch AI (api-version 2018-05-01): the core package."""

API_VERSION = "2018-05-01"
