"""bids_iron.bids"""
