from credit_common.db.alembic_env import run_migrations
from grant_service.adapters.orm import Base

run_migrations(Base.metadata)
