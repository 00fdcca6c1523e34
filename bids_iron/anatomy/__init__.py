"""bids_iron.anatomy"""
