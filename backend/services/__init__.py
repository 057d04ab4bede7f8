"""Services: they decide; routers call them, models store for them."""
