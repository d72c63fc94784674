"""Settings, database and errors: what every domain of the server shares."""
