-- Run once by the postgres image on an empty volume: the databases next to POSTGRES_DB (prefect).
CREATE DATABASE mlflow;
CREATE DATABASE ledger;
