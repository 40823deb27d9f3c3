"""CAC review DAGs: `cn_cac_review` (one run per partition awaiting review, two
Human-in-the-Loop gates in the Airflow UI) and `cn_cac_review_reminders` (hourly).

Approvers, the reference format and the timers are in `rules/cac_review.yaml`.
"""

from crossborder.review_dag import build_reminder_dag, build_review_dag

cn_cac_review = build_review_dag()
cn_cac_review_reminders = build_reminder_dag()
