"""newsletter: compose a daily digest from your articles and deliver it to your lists."""

from newsletter.errors import NewsletterError

__all__ = ["NewsletterError"]
