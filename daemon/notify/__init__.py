"""Graph change notifications: subscriptions kept, the endpoint Graph posts to, and the reads they trigger."""
