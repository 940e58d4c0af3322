"""Metrics rows name their environment: where the job trained and was measured, also for jobs
without kernel timings (CPU jobs), whose hardware and software were not stored before.

Revision ID: 0002
Revises: 0001

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # batch: SQLite cannot add a foreign key to an existing table in place (the table is copied)
    with op.batch_alter_table('metrics') as batch:
        batch.add_column(sa.Column('environment_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_metrics_environment_id_environments'), 'environments',
                                 ['environment_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('metrics') as batch:
        batch.drop_constraint(op.f('fk_metrics_environment_id_environments'), type_='foreignkey')
        batch.drop_column('environment_id')
