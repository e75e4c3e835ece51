from catalog_service.adapters.orm import Base
from credit_common.db.alembic_env import run_migrations

run_migrations(Base.metadata)
