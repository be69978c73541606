"""Pull-request checks: slim CI, the data diff, the evaluator, codegen, SQL lint, the PR comment."""
