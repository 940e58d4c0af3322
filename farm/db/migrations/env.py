"""Alembic environment: farm.db.session passes the connection; batch mode lets SQLite alter tables."""

from alembic import context

from farm.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
