"""Writing promotions into the GitOps repository: values files and Git history."""
