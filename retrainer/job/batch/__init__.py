"""A night on AWS Batch: one array job, one child per item to run.

submit      plans the night as `retrainer run` does, puts the plan and the data in the
            bucket, and submits one array job (or finds the one already submitted)
child       what each array child runs: its item's attempt under the local supervisor,
            the folder and its record put in the bucket (the record last: the commit)
status      the job's state from Batch and the records from the bucket; once the job has
            ended, the night's ledger, summary and notifications, as a local night's
"""
