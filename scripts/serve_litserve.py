"""Serve a model archive with LitServe (the second engine), through the same serving exchange.

  python scripts/serve_litserve.py --mar model_store/fusion_sentiment.mar --port 8000
  curl -s localhost:8000/predictions/fusion_sentiment -H 'Content-Type: application/json' \
       -d '{"text": "what a lovely day"}'
"""

from mmsent.harness.serve_litserve import main

if __name__ == "__main__":
    main()
