"""The settler: Celery workers that move money, and the periodic jobs (DESIGN.md).

``celery -A services.settler worker`` finds the application here.
"""

from services.settler.celery_app import app

__all__ = ["app"]
