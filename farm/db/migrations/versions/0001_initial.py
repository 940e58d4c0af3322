"""Initial schema: sweeps, jobs, stages, artifacts, stage locks, metrics, timings, environments.

Revision ID: 0001
Revises: 

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('environments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('gpu', sa.String(length=255), nullable=True),
    sa.Column('driver', sa.String(length=64), nullable=True),
    sa.Column('cuda', sa.String(length=64), nullable=True),
    sa.Column('cudnn', sa.String(length=64), nullable=True),
    sa.Column('torch', sa.String(length=64), nullable=True),
    sa.Column('pycuda', sa.String(length=64), nullable=True),
    sa.Column('python', sa.String(length=64), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_environments')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_environments_fingerprint'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('spec_hash', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('dataset', sa.String(length=128), nullable=False),
    sa.Column('sparsity', sa.Double(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('scheme', sa.String(length=16), nullable=False),
    sa.Column('bits', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('device', sa.String(length=8), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', name='jobstatus', native_enum=False, length=16), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=True),
    sa.Column('progress', sa.Double(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('spec_hash', name=op.f('uq_jobs_spec_hash'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_dataset'), ['dataset'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_model'), ['model'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)

    op.create_table('sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('grid', sa.JSON(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('start_at', sa.DateTime(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps'))
    )
    op.create_table('artifacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_artifacts_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts')),
    sa.UniqueConstraint('key', name=op.f('uq_artifacts_key'))
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_artifacts_content_hash'), ['content_hash'], unique=False)

    op.create_table('layer_timings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=True),
    sa.Column('gpu_index', sa.Integer(), nullable=True),
    sa.Column('layer', sa.String(length=128), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=True),
    sa.Column('batch', sa.Integer(), nullable=False),
    sa.Column('dtype', sa.String(length=16), nullable=False),
    sa.Column('weight_scheme', sa.String(length=16), nullable=True),
    sa.Column('sparsity', sa.Double(), nullable=True),
    sa.Column('ours_ms', sa.Double(), nullable=True),
    sa.Column('cudnn_fp32_ms', sa.Double(), nullable=True),
    sa.Column('cudnn_tf32_ms', sa.Double(), nullable=True),
    sa.Column('cudnn_fp16_ms', sa.Double(), nullable=True),
    sa.Column('cusparse_ms', sa.Double(), nullable=True),
    sa.Column('speedup_fp32', sa.Double(), nullable=True),
    sa.Column('speedup_tf32', sa.Double(), nullable=True),
    sa.Column('speedup_fp16', sa.Double(), nullable=True),
    sa.Column('speedup_cusparse', sa.Double(), nullable=True),
    sa.Column('max_rel_err', sa.Double(), nullable=True),
    sa.Column('floor_ms', sa.Double(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_layer_timings_environment_id_environments')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_layer_timings_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_layer_timings'))
    )
    with op.batch_alter_table('layer_timings', schema=None) as batch_op:
        batch_op.create_index('ix_layer_timings_job_layer', ['job_id', 'layer', 'batch'], unique=False)

    op.create_table('metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('accuracy', sa.Double(), nullable=True),
    sa.Column('dense_accuracy', sa.Double(), nullable=True),
    sa.Column('pruned_accuracy', sa.Double(), nullable=True),
    sa.Column('sparsity', sa.Double(), nullable=True),
    sa.Column('layer_sparsity', sa.JSON(), nullable=True),
    sa.Column('bits', sa.Integer(), nullable=False),
    sa.Column('scheme', sa.String(length=16), nullable=False),
    sa.Column('dense_bytes', sa.Integer(), nullable=True),
    sa.Column('compressed_bytes', sa.Integer(), nullable=True),
    sa.Column('compression_ratio', sa.Double(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_metrics_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metrics')),
    sa.UniqueConstraint('job_id', name=op.f('uq_metrics_job_id'))
    )
    op.create_table('model_timings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=True),
    sa.Column('gpu_index', sa.Integer(), nullable=True),
    sa.Column('batch', sa.Integer(), nullable=False),
    sa.Column('dense_fp32_ms', sa.Double(), nullable=True),
    sa.Column('dense_tf32_ms', sa.Double(), nullable=True),
    sa.Column('dense_fp16_ms', sa.Double(), nullable=True),
    sa.Column('sparse_ms', sa.Double(), nullable=True),
    sa.Column('speedup_fp32', sa.Double(), nullable=True),
    sa.Column('speedup_tf32', sa.Double(), nullable=True),
    sa.Column('speedup_fp16', sa.Double(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_model_timings_environment_id_environments')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_model_timings_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_timings'))
    )
    with op.batch_alter_table('model_timings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_timings_job_id'), ['job_id'], unique=False)

    op.create_table('stage_locks',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_stage_locks_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_stage_locks'))
    )
    op.create_table('sweep_jobs',
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_sweep_jobs_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.id'], name=op.f('fk_sweep_jobs_sweep_id_sweeps'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sweep_id', 'job_id', name=op.f('pk_sweep_jobs'))
    )
    op.create_table('stages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('running', 'succeeded', 'reused', 'skipped', 'failed', 'cancelled', name='stagestatus', native_enum=False, length=16), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('seconds', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_stages_artifact_id_artifacts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_stages_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stages')),
    sa.UniqueConstraint('job_id', 'name', name=op.f('uq_stages_job_id'))
    )
    with op.batch_alter_table('stages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stages_job_id'), ['job_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('stages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stages_job_id'))

    op.drop_table('stages')
    op.drop_table('sweep_jobs')
    op.drop_table('stage_locks')
    with op.batch_alter_table('model_timings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_timings_job_id'))

    op.drop_table('model_timings')
    op.drop_table('metrics')
    with op.batch_alter_table('layer_timings', schema=None) as batch_op:
        batch_op.drop_index('ix_layer_timings_job_layer')

    op.drop_table('layer_timings')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_artifacts_content_hash'))

    op.drop_table('artifacts')
    op.drop_table('sweeps')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_jobs_model'))
        batch_op.drop_index(batch_op.f('ix_jobs_dataset'))

    op.drop_table('jobs')
    op.drop_table('environments')
